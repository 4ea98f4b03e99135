-- wrk: usage events for tests/load/ingest.sh and soak.sh. MODE=batch: BATCH events per
-- request to /v1/quotas/track; MODE=single: one event per request, keyed by
-- Idempotency-Key. TOKENS names a file of access tokens (one picked at random per request),
-- RUN prefixes every key. A response that is not 200, or a batch with an event not
-- recorded, is reported once on stderr.
local tokens = {}
local count = 0
local threads = 0
function setup(thread)
    threads = threads + 1
    thread:set("tid", threads)
end
function init(args)
    for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
    math.randomseed(tid * 7919 + os.time())
    prefix = os.getenv("RUN") .. "-" .. tid .. "-"
    mode = os.getenv("MODE")
    size = tonumber(os.getenv("BATCH"))
end
function response(status, headers, body)
    local ok = status == 200 and (mode ~= "batch" or body:find('"recorded":' .. size .. ',', 1, true))
    if not ok and not shown then
        shown = true
        io.stderr:write("first bad answer: " .. status .. " " .. body:sub(1, 300) .. "\n")
    end
end
function request()
    count = count + 1
    local headers = {
        ["authorization"] = "Bearer " .. tokens[math.random(#tokens)],
        ["content-type"] = "application/json",
    }
    if mode == "single" then
        headers["idempotency-key"] = prefix .. count
        return wrk.format("POST", "/v1/quotas/chat_messages/track", headers, '{"amount":1}')
    end
    local events = {}
    for i = 1, size do
        events[i] = '{"meter":"chat_messages","key":"' .. prefix .. count .. "-" .. i .. '"}'
    end
    return wrk.format("POST", "/v1/quotas/track", headers,
        '{"events":[' .. table.concat(events, ",") .. ']}')
end
