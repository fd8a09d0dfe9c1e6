"""The OpenAPI document is generated from the models (api/contract.py, shared/schemas.py) and
says what a client needs: a named schema for every body, an operationId on every operation, the
problem statuses each operation can return, the headers of 201/202/429/503 answers, servers and
examples. And the check that every observed answer matches it (tests/contract_check.py) can fail.
"""
from __future__ import annotations

import json

from flask import Response

from docnum.shared.errors import CATALOG, ProblemCode
from tests.conftest import BASE
from tests.contract_check import ContractCheck


def _operations(document: dict) -> list[tuple[str, str, dict]]:
    return [(path, method, op) for path, ops in document["paths"].items()
            for method, op in ops.items()]


def test_every_operation_is_named_and_every_body_has_a_named_schema(client):
    document = client.get(f"{BASE}/openapi.json").json
    assert document["openapi"] == "3.1.0"
    assert document["servers"]
    schemas = document["components"]["schemas"]
    ids = [op["operationId"] for _, _, op in _operations(document)]
    assert len(ids) == len(set(ids)) == 37  # the contract's 30, and 7 for receipts and checkpoints
    for path, method, op in _operations(document):
        for status, answer in op["responses"].items():
            for media, content in answer.get("content", {}).items():
                if media == "text/plain":
                    continue
                ref = content["schema"].get("$ref", "")
                assert ref.startswith("#/components/schemas/"), (path, method, status, media)
                schema = schemas[ref.rsplit("/", 1)[1]]
                if "items" in schema.get("properties", {}):  # a page: its items are typed
                    assert "$ref" in schema["properties"]["items"]["items"], (path, ref)
                    assert set(schema["required"]) == {"items", "next_cursor"}
                readiness = path == "/readyz"  # its 503 is the readiness report, not a problem
                if int(status) >= 400 and not readiness:
                    assert media == "application/problem+json" and ref.endswith("/Problem")
        body = op.get("requestBody", {}).get("content", {})
        for content in body.values():
            assert content["schema"]["$ref"].startswith("#/components/schemas/")


def test_problem_codes_are_one_enum():
    assert set(CATALOG) == set(ProblemCode)


def test_the_document_lists_codes_statuses_headers_and_examples(client):
    document = client.get(f"{BASE}/openapi.json").json
    schemas = document["components"]["schemas"]
    assert schemas["ProblemCode"]["enum"] == [code.value for code in ProblemCode]
    generate = document["paths"][f"{BASE}/generate"]["post"]
    assert set(generate["responses"]) == {"201", "202", "400", "401", "403", "409", "413", "415",
                                          "422", "429", "500", "503"}
    assert set(generate["responses"]["201"]["headers"]) == {"Location"}
    assert set(generate["responses"]["202"]["headers"]) == {"Location", "Retry-After"}
    assert set(generate["responses"]["429"]["headers"]) == {"Retry-After"}
    assert set(generate["responses"]["503"]["headers"]) == {"Retry-After"}
    lookup = document["paths"][f"{BASE}/numbers/{{document_number}}"]["get"]
    assert set(lookup["responses"]) == {"200", "401", "403", "404", "409", "500", "503"}
    assert lookup["parameters"][0]["example"] == "คคง.-สคฉ.3-0001-2568"
    health = document["paths"]["/healthz"]["get"]
    assert health["security"] == [] and set(health["responses"]) == {"200", "500"}
    text = json.dumps(document, ensure_ascii=False)
    assert "คคง.-สคฉ.3-0001-2568" in json.dumps(schemas["IssuedNumber"]["examples"],
                                               ensure_ascii=False)
    assert schemas["NumberingContextBody"]["examples"][0]["originator"] == "คคง."
    assert "additionalProperties" not in schemas["NumberingContextBody"]
    assert set(schemas["Config"]["required"]) >= {"id", "project", "template", "reset",
                                                  "version", "active"}
    assert "x-permission" in text


def test_the_answers_check_catches_an_answer_the_document_does_not_allow(app, client, auth,
                                                                         seed):
    ids = seed()
    with ContractCheck() as check:
        assert client.get(f"{BASE}/configs/{ids['LETTER']}", headers=auth()).status_code == 200
        assert client.delete(f"{BASE}/generate", headers=auth()).status_code == 405
        with app.test_request_context(f"{BASE}/configs/{ids['LETTER']}"):
            check.observe(app, Response(json.dumps({"id": "one"}), 200,
                                        mimetype="application/json"))
            check.observe(app, Response("{}", 418, mimetype="application/json"))
    assert check.checked == 1 and check.undocumented == 1
    assert len(check.failures) == 2, check.failures
