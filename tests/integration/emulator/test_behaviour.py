"""Emulator failure modes the transcripts do not cover (emulator.behaviour): a hung backend."""
from __future__ import annotations

import time

import httpx

from tests.support.emulator import post_prompt
from tests.support.graphs import basic_graph


def test_a_hung_backend_keeps_answering_http_but_never_finishes(emulator):
    emu = emulator()
    emu.control(hang=True)
    prompt_id = post_prompt(emu.url, basic_graph())
    time.sleep(0.5)
    queue = httpx.get(emu.url + "/queue", timeout=2).json()
    assert queue["queue_running"][0][1] == prompt_id
    httpx.post(emu.url + "/interrupt", json={}).raise_for_status()
    time.sleep(0.3)
    assert httpx.get(f"{emu.url}/history/{prompt_id}").json() == {}
