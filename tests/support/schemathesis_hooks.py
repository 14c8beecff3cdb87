"""schemathesis hooks for the fuzz test: long polls are capped so a run stays within its time budget."""
import schemathesis


@schemathesis.hook
def map_body(ctx, body):
    if isinstance(body, dict) and isinstance(body.get("wait_ms"), int):
        body["wait_ms"] = min(body["wait_ms"], 100)
    return body
