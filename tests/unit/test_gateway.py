"""The local gateway's routing and events: read from template.yaml, shaped as API Gateway's payload 2.0."""

from __future__ import annotations

import base64

from tokenflow_local.gateway import Route, http_api_event, template_routes


def test_routes_come_from_the_template_with_the_exact_path_first():
    routes = template_routes()
    assert [(r.key, r.function) for r in routes] == [
        ("POST /webhooks/particle", "webhook"),
        ("ANY /{proxy+}", "api"),
    ]


def test_the_webhook_path_goes_to_the_webhook_and_everything_else_to_the_api():
    webhook, api = template_routes()
    assert webhook.matches("POST", "/webhooks/particle") == {}
    assert webhook.matches("GET", "/webhooks/particle") is None
    assert api.matches("GET", "/devices/e00fce68a1b2c3d4e5f60718/qr") == {
        "proxy": "devices/e00fce68a1b2c3d4e5f60718/qr"
    }
    assert api.matches("DELETE", "/") is None  # {proxy+} needs at least one character
    assert Route("GET", "/devices/{id}", "api").matches("GET", "/devices/abc") == {"id": "abc"}


def test_an_http_request_becomes_a_payload_2_event():
    route = Route("ANY", "/{proxy+}", "api")
    event = http_api_event(
        route,
        {"proxy": "devices"},
        "GET",
        "/devices?state=waiting&limit=5&tag=a&tag=b",
        {"host": "127.0.0.1:3000"},
        b"",
        "127.0.0.1",
    )
    assert event["version"] == "2.0" and event["routeKey"] == "ANY /{proxy+}"
    assert event["rawPath"] == "/devices" and event["requestContext"]["http"]["method"] == "GET"
    assert event["queryStringParameters"] == {"state": "waiting", "limit": "5", "tag": "a,b"}
    assert event["pathParameters"] == {"proxy": "devices"}
    assert "body" not in event and event["isBase64Encoded"] is False


def test_json_bodies_stay_text_and_binary_bodies_are_base64():
    route = Route("POST", "/webhooks/particle", "webhook")
    text = http_api_event(
        route, {}, "POST", "/webhooks/particle", {"content-type": "application/json"}, b'{"a":1}', ""
    )
    assert text["body"] == '{"a":1}' and text["isBase64Encoded"] is False
    png = b"\x89PNG\r\n\x1a\n\x00"
    binary = http_api_event(route, {}, "POST", "/x", {"content-type": "image/png"}, png, "")
    assert binary["isBase64Encoded"] is True and base64.b64decode(binary["body"]) == png
