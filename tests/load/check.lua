-- wrk: `POST /v1/entitlements/check` (may this account run `short_chat`?) for soak.sh, as a
-- token picked at random from the file TOKENS. The first answer that is not 200 is reported
-- on stderr.
local tokens = {}
function init(args)
    for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
end
function response(status, headers, body)
    if status ~= 200 and not shown then
        shown = true
        io.stderr:write("first non-200: " .. status .. " " .. body .. "\n")
    end
end
function request()
    return wrk.format("POST", "/v1/entitlements/check", {
        ["authorization"] = "Bearer " .. tokens[math.random(#tokens)],
        ["content-type"] = "application/json",
    }, '{"kind":"action","name":"short_chat"}')
end
