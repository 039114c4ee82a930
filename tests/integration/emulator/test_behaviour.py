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


def test_odd_prompts_get_comfyuis_answers(emulator):
    """As a real ComfyUI 0.3.64 answers them: ``[]`` is a graph without outputs, and a node whose inputs are not an
    object fails validation (400), neither a 500."""
    emu = emulator()
    empty = httpx.post(emu.url + "/prompt", json={"prompt": []}, timeout=5)
    assert empty.status_code == 400 and empty.json() == {"error": {
        "type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}},
        "node_errors": {}}
    graph = basic_graph()
    graph["2"]["inputs"] = 3
    odd = httpx.post(emu.url + "/prompt", json={"prompt": graph}, timeout=5)
    assert odd.status_code == 400 and odd.json()["node_errors"]["2"]["errors"][0]["details"] == \
        "argument of type 'int' is not iterable"
