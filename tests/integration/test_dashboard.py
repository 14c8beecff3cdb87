"""The dashboard in headless Chromium (Debian's chromium, driven by Playwright) against a real cluster: it loads,
shows the leader, updates live when a job is submitted elsewhere, and follows the cluster when the node that
served it (the leader) is killed with SIGKILL."""
from __future__ import annotations

import asyncio
import os
import shutil

import pytest

from tests.support.api_cluster import Api, make_cluster

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright = pytest.importorskip("playwright.async_api", reason="playwright is in the test extra")
if not os.path.exists(CHROMIUM):
    pytest.skip("Debian chromium is not installed (.ci/run installs it)", allow_module_level=True)

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


async def _text_becomes(page, selector: str, predicate, timeout: float = 20.0) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        text = (await page.text_content(selector)) or ""
        if predicate(text):
            return text
        assert loop.time() < deadline, f"{selector} stayed {text!r}"
        await asyncio.sleep(0.2)


async def test_dashboard_shows_leader_updates_live_and_survives_the_leaders_kill(tmp_path):
    cluster = make_cluster(tmp_path / "c")
    cluster.start_all()
    try:
        await cluster.wait_ready(timeout=60)
        async with Api(cluster) as api, playwright.async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            for attempt in range(3):
                # A second election right after start-up (a node whose connections came up late) can depose the
                # first leader: then the page rightly shows the new one, and we ask the cluster again.
                leader = await api.leader()
                leader_id = cluster.ids[leader]
                await page.goto(f"{cluster.urls[leader]}/#key={cluster.admin_key}")
                try:
                    await _text_becomes(page, "#leader", lambda t: t == leader_id, timeout=10)
                    break
                except AssertionError:
                    if attempt == 2:
                        raise
            await _text_becomes(page, "#conn", lambda t: t == "live")
            assert len(await page.query_selector_all("#cluster-table tbody tr")) == 3

            # a job submitted through another node shows up live
            status, job, _ = await api.post((leader + 1) % 3, "/jobs", {"payload": {"from": "test"}, "queue": "dash"})
            assert status == 201
            await _text_becomes(page, "#recent", lambda t: job["job_id"] in t)
            await _text_becomes(page, "#feed", lambda t: job["job_id"] in t)

            # the page's own node (the leader) dies: the page moves to another node and shows the new leader
            cluster.nodes[leader].kill()
            new_leader = await _text_becomes(page, "#leader", lambda t: t not in ("", "?", "none", leader_id),
                                             timeout=30)
            assert new_leader in cluster.ids
            await _text_becomes(page, "#conn", lambda t: t == "live", timeout=30)
            survivor = next(i for i in range(3) if i != leader)
            status, after, _ = await api.post(survivor, "/jobs", {"payload": "after the kill", "queue": "dash"})
            assert status == 201
            await _text_becomes(page, "#recent", lambda t: after["job_id"] in t, timeout=30)
            await _text_becomes(page, "#node-url", lambda t: t != cluster.urls[leader])

            # the submit form works from the page
            await page.fill("#submit-form textarea", '{"typed": "in the browser"}')
            await page.click("#submit-form button")
            result = await _text_becomes(page, "#submit-result", lambda t: t.startswith("submitted"))
            assert "READY" in result
            assert not errors, errors
            await browser.close()
    finally:
        cluster.stop_all()
