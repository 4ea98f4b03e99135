"""The official OpenAI and Anthropic Python SDKs, unmodified, against Tollgate's gateway
(the mock provider answers every model). Run by tests/sdk/run.sh, which starts the server
and passes BASE, API_KEY (a Tollgate API key), ADMIN_KEY and ACCOUNT in the environment.
Exits non-zero on the first failed check."""

import json
import os
import urllib.request

import anthropic
import openai

BASE = os.environ["BASE"]
API_KEY = os.environ["API_KEY"]
ADMIN_KEY = os.environ["ADMIN_KEY"]
ACCOUNT = os.environ["ACCOUNT"]
MESSAGES = [{"role": "user", "content": "Summarise the ledger rules in one line."}]


def http(method, path, token, body=None):
    request = urllib.request.Request(
        BASE + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def check(condition, what):
    if not condition:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


oai = openai.OpenAI(base_url=BASE + "/v1", api_key=API_KEY, max_retries=0)
ant = anthropic.Anthropic(base_url=BASE, api_key=API_KEY, max_retries=0)

models = {m.id for m in oai.models.list()}
check("gpt-4o-mini" in models and "gpt-4o" not in models, f"OpenAI lists the plan's models: {sorted(models)}")
check({m.id for m in ant.models.list()} == models, "Anthropic lists the same models")

raw = oai.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=100)
reply = raw.parse()
text = reply.choices[0].message.content
check(bool(text) and reply.choices[0].finish_reason == "stop", "a chat completion answers")
usage = reply.usage
check(usage.prompt_tokens > 0 and usage.completion_tokens > 0
      and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, f"with usage {usage}")
check(int(raw.headers["x-tollgate-credits"]) >= 1, "and the credits it cost in a header")

streamed, final_usage = "", None
for chunk in oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=100,
                                         stream=True, stream_options={"include_usage": True}):
    if chunk.choices and chunk.choices[0].delta.content:
        streamed += chunk.choices[0].delta.content
    if chunk.usage:
        final_usage = chunk.usage
check(streamed == text, "the streamed completion is the same text")
check(final_usage is not None and final_usage.completion_tokens == usage.completion_tokens,
      "and its last chunk reports the same usage")

message = ant.messages.create(model="claude-3-5-haiku", max_tokens=100, messages=MESSAGES)
check(message.content[0].text == text and message.stop_reason == "end_turn", "Anthropic's messages answer")
check(message.usage.input_tokens > 0 and message.usage.output_tokens == usage.completion_tokens,
      f"with usage {message.usage}")
with ant.messages.stream(model="claude-3-5-haiku", max_tokens=100, messages=MESSAGES) as stream:
    final = stream.get_final_message()
check(final.content[0].text == text, "Anthropic's stream assembles the same text")
check(final.usage.output_tokens == usage.completion_tokens, "and the same usage")

cut = ant.messages.create(model="claude-3-5-haiku", max_tokens=3, messages=MESSAGES)
check(cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 3, "max_tokens cuts the answer")

for call, kind in [
    (lambda: oai.chat.completions.create(model="gpt-4o", messages=MESSAGES), openai.PermissionDeniedError),
    (lambda: oai.chat.completions.create(model="no-such-model", messages=MESSAGES), openai.NotFoundError),
    (lambda: ant.messages.create(model="gpt-4o", max_tokens=5, messages=MESSAGES), anthropic.PermissionDeniedError),
]:
    try:
        call()
        check(False, f"{kind.__name__} expected")
    except kind:
        check(True, f"{kind.__name__} as each SDK expects")

try:
    openai.OpenAI(base_url=BASE + "/v1", api_key="tgk_wrong", max_retries=0).models.list()
    check(False, "a wrong key is refused")
except openai.AuthenticationError:
    check(True, "a wrong key is openai.AuthenticationError")

used = http("GET", "/v1/usage", API_KEY)["days"]
calls = sum(d["calls"] for d in used)
check(calls == 5, f"GET /v1/usage counts the five calls made: {used}")

# Out of credits: 402 before any provider is called, with the balance and the hold needed.
balance = http("GET", "/v1/credits", API_KEY)["available"]
http("POST", f"/v1/admin/accounts/{ACCOUNT}/credits", ADMIN_KEY,
     {"delta": -balance, "reason": "SDK test: out of credits"})
try:
    oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    check(False, "402 expected")
except openai.APIStatusError as err:
    check(err.status_code == 402 and err.body["balance"] == 0 and err.body["reserved"] > 0,
          f"OpenAI: 402 with the balance and the hold needed: {err.body}")
try:
    ant.messages.create(model="claude-3-5-haiku", max_tokens=50, messages=MESSAGES)
    check(False, "402 expected")
except anthropic.APIStatusError as err:
    check(err.status_code == 402 and err.body["error"]["type"] == "billing_error",
          f"Anthropic: 402 billing_error: {err.body}")
check(http("GET", "/v1/usage", API_KEY)["days"] == used, "refused calls are not recorded")
print("all SDK checks passed")
