-- wrk: `POST /v1/credits/spend {"action":"short_chat"}` for tests/load/spend.sh and
-- soak.sh, as a token picked at random from the file TOKENS, with a unique Idempotency-Key
-- prefixed by RUN. The first answer that is not 200 is reported on stderr.
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
end
function response(status, headers, body)
    if status ~= 200 and not shown then
        shown = true
        io.stderr:write("first non-200: " .. status .. " " .. body .. "\n")
    end
end
function request()
    count = count + 1
    return wrk.format("POST", "/v1/credits/spend", {
        ["authorization"] = "Bearer " .. tokens[math.random(#tokens)],
        ["content-type"] = "application/json",
        ["idempotency-key"] = prefix .. count,
    }, '{"action":"short_chat"}')
end
