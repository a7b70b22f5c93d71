"""The generator service: request validation, the hf backend, serve configs, the Serve app over HTTP."""

import json
from pathlib import Path

import httpx
import pytest
import yaml

from s3ray.config import GeneratorConfig
from s3ray.generation import prompts
from s3ray.generation.service import ChatRequest, HFBackend, ReaderBackend, app_builder, parse_chat_request
from s3ray.serving import BadRequest
from s3ray.types import Doc

REPO = Path(__file__).resolve().parents[2]


def test_parse_chat_request():
    req = parse_chat_request({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    assert req == ChatRequest([{"role": "user", "content": "hi"}], 4, 0.0)
    for bad, reason in [([], "JSON object"), ({"messages": []}, "non-empty"),
                        ({"messages": [{"role": "user"}]}, "content"),
                        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
                        ({"messages": [{"role": "user", "content": "x"}], "temperature": -1}, "temperature")]:
        with pytest.raises(ValueError, match=reason):
            parse_chat_request(bad)


USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("body, status, reason", [
    ({"messages": [{"role": "wizard", "content": "x"}]}, 400, r"messages\[0\]\.role .*system, user, assistant"),
    ({"messages": [*USER, {"role": "user", "content": "a\ud800"}]}, 400, r"messages\[1\]\.content .*surrogate"),
    ({"model": "gpt-4o", "messages": USER}, 404, "does not exist"),
    ({"model": "m", "messages": USER, "stream": True}, 400, "'stream' is not supported"),
    ({"messages": USER, "max_tokens": True}, 400, "max_tokens"),
])
def test_parse_chat_request_refuses_what_it_cannot_serve(body, status, reason):
    with pytest.raises(BadRequest, match=reason) as err:
        parse_chat_request(body, "m")
    assert err.value.status == status
    assert parse_chat_request({"model": "m", "messages": USER, "stream": False}, "m").messages == USER


def test_parse_chat_request_reads_text_parts_and_names_other_parts():
    parts = {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "there"}]}
    assert parse_chat_request({"messages": [parts]}).messages == [{"role": "user", "content": "hi\nthere"}]
    image = {"type": "image_url", "image_url": {"url": "http://x/y.png"}}
    for content, reason in [([{"type": "text", "text": "a"}, image], r"content\[1\] is a 'image_url' part"),
                            ([], "non-empty list of text parts"), (None, "string or a non-empty list"),
                            ([{"type": "text", "text": 3}], r"content\[0\]\.text must be a string"),
                            ([{"type": "text", "text": "\ud800"}], r"content\[0\]\.text .*surrogate")]:
        with pytest.raises(BadRequest, match=reason) as err:
            parse_chat_request({"messages": [{"role": "user", "content": content}]})
        assert err.value.status == 400


def test_reader_check_names_the_expected_prompt_form():
    bad = [{"role": "system", "content": f"{prompts.CONTEXT_START}\nnot a doc\n{prompts.CONTEXT_END}"}, *USER]
    with pytest.raises(BadRequest, match=r"Doc i \(Title: T\) text"):
        ReaderBackend.check(ChatRequest(bad, None, 0.0))
    with pytest.raises(BadRequest, match="no user message.*Doc i"):
        ReaderBackend.check(ChatRequest([{"role": "system", "content": "x"}], None, 0.0))


def test_hf_backend_greedy_batches_match_single_requests(tiny_model_dir):
    backend = HFBackend(GeneratorConfig(backend="hf", model=str(tiny_model_dir), max_tokens=6))
    short = ChatRequest(prompts.zero_shot_messages("Who?"), None, 0.0)
    long = ChatRequest(prompts.answer_messages("Where did the band first play?",
                                               [Doc("1", "Tinted Windows", "The band first played in Tulsa.")]),
                       3, 0.0)
    batched = backend.generate([short, long])
    assert batched == [backend.generate([short])[0], backend.generate([long])[0]]  # left padding is right
    assert batched == backend.generate([short, long])  # greedy: deterministic
    ids = backend.tokenizer(batched[1].text, add_special_tokens=False)["input_ids"]
    assert len(ids) <= 3 + 1  # its own max_tokens (decode/re-encode may merge or split one token)
    # usage: the prompt's own tokens (not the batch's padding), at most max_tokens generated
    prompt = backend.tokenizer.apply_chat_template(long.messages, tokenize=False, add_generation_prompt=True)
    assert batched[1].prompt_tokens == len(backend.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert batched[0].prompt_tokens < batched[1].prompt_tokens and 1 <= batched[1].completion_tokens <= 3


@pytest.mark.parametrize("backend", ["reader", "hf"])
def test_serve_configs_name_the_builder(backend):
    config = yaml.safe_load((REPO / "serve_configs" / f"generator_{backend}.yaml").read_text())
    [app] = config["applications"]
    assert app["import_path"] == "s3ray.generation.service:app_builder" and app["route_prefix"] == "/"
    assert f"generator.backend={backend}" in app["args"]["overrides"]


def test_vllm_serve_config_is_generated_from_the_preset(capsys):
    """The checked-in vLLM YAML is `s3ray serve-config`'s output: it names the preset instead of copying
    its settings, so the generator it builds is exactly the preset's."""
    from s3ray.cli import main
    from s3ray.config import load_config

    assert main(["serve-config", "--config", "s3_8_3_3", "--app", "generator"]) == 0
    generated = capsys.readouterr().out
    assert (REPO / "serve_configs" / "generator_vllm.yaml").read_text() == generated
    [app] = yaml.safe_load(generated)["applications"]
    assert app["import_path"] == "s3ray.generation.service:app_builder" and app["name"] == "generator"
    preset = load_config("s3_8_3_3")
    built = load_config(app["args"]["config"], app["args"]["overrides"])
    assert built.generator == preset.generator and built.generator.backend == "vllm"


def test_serve_config_carries_overrides_and_both_apps(capsys):
    from s3ray.cli import main
    from s3ray.config import load_config

    assert main(["serve-config", "--config", "demo_cpu", "serve.port=9123", "generator.num_replicas=2"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["http_options"] == {"host": "127.0.0.1", "port": 9123}
    retriever, generator = config["applications"]
    assert (retriever["route_prefix"], generator["route_prefix"]) == ("/retrieve", "/")
    assert load_config(generator["args"]["config"], generator["args"]["overrides"]).generator.num_replicas == 2
    assert main(["serve-config", "--config", "demo_cpu", "generator.backend=openai",
                 "generator.base_url=http://x/v1"]) == 2
    assert "external endpoint" in capsys.readouterr().err


def test_reader_serve_config_builds_an_app():
    config = yaml.safe_load((REPO / "serve_configs" / "generator_reader.yaml").read_text())
    from ray.serve.deployment import Application

    assert isinstance(app_builder(config["applications"][0]["args"]), Application)


@pytest.mark.gpu
def test_vllm_app_builds(tmp_path):
    pytest.importorskip("vllm")
    from s3ray.config import load_config
    from s3ray.generation.service import build_app

    cfg = load_config(None, [f"paths.work_dir={tmp_path}", "generator.backend=vllm",
                             "generator.model=Qwen/Qwen2.5-0.5B-Instruct"])
    assert build_app(cfg) is not None


@pytest.mark.ray
def test_reader_app_over_http(session_cfg, ray_cluster):
    from s3ray.generation.client import GeneratorClient
    from s3ray.generation.reader import ExtractiveReader
    from s3ray.generation.service import deploy

    base_url = deploy(session_cfg)
    assert base_url == session_cfg.generator.base_url
    models = httpx.get(f"{base_url}/models").json()
    assert models["data"][0]["id"] == session_cfg.generator.model
    bad = httpx.post(f"{base_url}/chat/completions", json={"model": "x", "messages": []})
    assert bad.status_code == 400 and "non-empty" in bad.json()["error"]["message"]

    docs = [Doc("1", "Eiffel Tower", "It was designed by Gustave Eiffel's company. The tower is 330 metres tall."),
            Doc("2", "Amazon River", "The Amazon River in South America is the largest river by discharge.")]
    questions = ["How tall is the Eiffel Tower?", "Where is the Amazon River?", "Who designed the tower?"] * 4
    client = GeneratorClient.from_config(session_cfg.generator)
    replies = client.chat_many([prompts.answer_messages(q, docs) for q in questions])
    local = ExtractiveReader.from_config(session_cfg.generator)
    assert replies == local.answer_many([(q, docs) for q in questions])  # same answers, batched or not
    assert "330 metres" in replies[0] and "South America" in replies[1]


@pytest.mark.ray
@pytest.mark.parametrize("body, status, message", [
    ({"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages[0].role"),
    ({"messages": [{"role": "user", "content": "\ud800"}]}, 400, "messages[0].content"),
    ({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}, 404, "does not exist"),
    ({"messages": [{"role": "user", "content": "x"}], "stream": True}, 400, "'stream' is not supported"),
    ({"messages": [{"role": "system", "content": f"{prompts.CONTEXT_START}\nno doc\n{prompts.CONTEXT_END}"},
                   {"role": "user", "content": "x"}]}, 400, "Doc i (Title: T) text"),
    ({"messages": [{"role": "user", "content": "x" * (1 << 20)}]}, 413, "limit"),
])
def test_reader_app_refuses_bad_input_and_stays_healthy(services, body, status, message):
    base_url = services.generator.base_url
    # json.dumps keeps "\ud800" as an escape, as a client sending a lone surrogate would
    response = httpx.post(f"{base_url}/chat/completions", content=json.dumps(body),
                          headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error"
    if status == 404:
        assert error["code"] == "model_not_found"
    assert httpx.get(f"{base_url}/models", timeout=10).status_code == 200


@pytest.mark.ray
def test_reader_app_reads_another_prompt_template_and_reports_usage(services):
    base_url = services.generator.base_url
    messages = [{"role": "system", "content": "Answer from these passages.\n"
                                              "The Eiffel Tower is 330 metres tall.\n"
                                              "The Amazon River flows through South America."},
                {"role": "user", "content": "How tall is the Eiffel Tower?"}]
    body = httpx.post(f"{base_url}/chat/completions", json={"model": services.generator.model,
                                                              "messages": messages}, timeout=60).json()
    answer = body["choices"][0]["message"]["content"]
    assert "330 metres" in answer
    usage = body["usage"]
    assert usage["prompt_tokens"] == sum(len(m["content"].split()) for m in messages)
    assert usage["completion_tokens"] == len(answer.split()) > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.ray
def test_official_openai_client_chats_and_gets_openai_errors(services):
    """The official client (it sends content parts for some calls) against the running service."""
    openai = pytest.importorskip("openai")
    gen = services.generator
    client = openai.OpenAI(base_url=gen.base_url, api_key="unused", max_retries=0, timeout=60)
    docs = [Doc("1", "Eiffel Tower", "The tower is 330 metres tall.")]
    [system, user] = prompts.answer_messages("How tall is the Eiffel Tower?", docs)
    as_parts = [{"role": m["role"], "content": [{"type": "text", "text": m["content"]}]} for m in (system, user)]
    for messages in ([system, user], as_parts):
        reply = client.chat.completions.create(model=gen.model, messages=messages, temperature=0)
        assert "330 metres" in reply.choices[0].message.content and reply.usage.total_tokens > 0
    with pytest.raises(openai.NotFoundError, match="does not exist") as missing:
        client.chat.completions.create(model="no-such-model", messages=[user])
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError, match=r"messages\[0\]\.role"):
        client.chat.completions.create(model=gen.model, messages=[{"role": "wizard", "content": "x"}])
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    with pytest.raises(openai.BadRequestError, match="only text parts"):
        client.chat.completions.create(model=gen.model, messages=[{"role": "user", "content": [image]}])
    assert [m.id for m in client.models.list()] == [gen.model]
