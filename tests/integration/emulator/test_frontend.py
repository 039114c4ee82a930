"""What the emulator answers ComfyUI's web editor (emulator.routes_frontend): node packs' web extensions, templates,
i18n, the model browser, safetensors metadata, the newest server's subgraph and node-replacement routes, and
/internal/*."""
from __future__ import annotations

import json
import struct

import httpx


def test_the_demo_pack_and_a_packs_folder_are_listed_and_served_as_javascript(emulator, tmp_path):
    pack = tmp_path / "my-pack"
    (pack / "sub").mkdir(parents=True)
    (pack / "sub" / "widget.js").write_text("export const x = 1;\n")
    (pack / "notes.txt").write_text("not an extension")
    emu = emulator("--demo-pack", "--extension", f"my-pack={pack}")
    listed = httpx.get(emu.url + "/api/extensions").json()
    assert listed == ["/extensions/emulator-demo/demo.js", "/extensions/my-pack/sub/widget.js"]
    for path in listed:
        served = httpx.get(emu.url + path)
        assert served.status_code == 200 and served.headers["content-type"].startswith("application/javascript")
    demo = httpx.get(emu.url + listed[0]).text
    assert 'from "../../scripts/app.js"' in demo and "app.registerExtension" in demo
    assert "window.__emulatorDemoPackLoaded = true" in demo
    assert httpx.get(emu.url + "/extensions/my-pack/../../etc/passwd").status_code == 404
    assert httpx.get(emu.url + "/extensions/other/x.js").status_code == 404
    assert httpx.get(emu.url + "/workflow_templates").json() == {"emulator-demo": ["demo-invert"]}
    example = httpx.get(emu.url + "/api/workflow_templates/emulator-demo/demo-invert.json").json()
    assert [n["type"] for n in example["nodes"]] == ["EmptyImage", "ImageInvert", "SaveImage"]
    plain = emulator()
    assert httpx.get(plain.url + "/extensions").json() == []
    assert httpx.get(plain.url + "/workflow_templates").json() == {}


def test_templates_i18n_and_the_model_browser_answer_in_the_real_shapes(emulator):
    emu = emulator("--checkpoints", "a.safetensors,sub/b.ckpt")
    index = httpx.get(emu.url + "/templates/index.json")
    assert index.headers["content-type"].startswith("application/json")
    names = [t["name"] for group in index.json() for t in group["templates"]]
    assert names and all(httpx.get(f"{emu.url}/templates/{n}.json").json()["nodes"] for n in names)
    assert httpx.get(emu.url + "/templates/missing.json").status_code == 404
    assert httpx.get(emu.url + "/api/i18n").json() == {}
    folders = httpx.get(emu.url + "/api/experiment/models").json()
    assert {"name": "checkpoints", "folders": [str(emu.base_dir / "models" / "checkpoints")]} in folders
    assert not {"configs", "custom_nodes"} & {f["name"] for f in folders}
    files = httpx.get(emu.url + "/api/experiment/models/checkpoints").json()
    assert [(f["name"], f["pathIndex"], f["size"]) for f in files] == [("a.safetensors", 0, 0), ("sub/b.ckpt", 0, 0)]
    assert httpx.get(emu.url + "/experiment/models/nope").status_code == 404


def test_view_metadata_reads_a_safetensors_header(emulator):
    emu = emulator("--checkpoints", "")
    header = json.dumps({"__metadata__": {"ss_network_dim": "16"}, "w": {"dtype": "F16", "shape": [1],
                                                                        "data_offsets": [0, 2]}}).encode()
    lora = emu.base_dir / "models" / "loras"
    lora.mkdir(parents=True)
    (lora / "style.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0\0")
    (lora / "bare.safetensors").write_bytes(b"")
    answer = httpx.get(emu.url + "/api/view_metadata/loras", params={"filename": "style.safetensors"})
    assert answer.status_code == 200 and answer.json() == {"ss_network_dim": "16"}
    for folder, name in (("loras", "bare.safetensors"), ("loras", "missing.safetensors"), ("nope", "x.safetensors")):
        assert httpx.get(f"{emu.url}/view_metadata/{folder}", params={"filename": name}).status_code == 404


def test_subgraphs_and_node_replacements_exist_only_on_the_newest_server(emulator):
    old, new = emulator(), emulator("--newest")
    for path in ("/api/global_subgraphs", "/api/node_replacements"):
        assert httpx.get(old.url + path).status_code == 404
        assert httpx.get(new.url + path).json() == {}
    assert httpx.get(new.url + "/api/global_subgraphs/abc").status_code == 404


def test_internal_routes_list_folders_and_files_newest_first(emulator):
    emu = emulator()
    paths = httpx.get(emu.url + "/internal/folder_paths").json()
    assert paths["checkpoints"] == [str(emu.base_dir / "models" / "checkpoints")] and "loras" in paths
    assert httpx.post(emu.url + "/upload/image", files={"image": ("later.png", b"x")}).status_code == 200
    assert httpx.get(emu.url + "/internal/files/input").json() == ["later.png", "example.png"]
    bad = httpx.get(emu.url + "/internal/files/models")
    assert bad.status_code == 400 and bad.json() == {"error": "Invalid directory type"}
    assert httpx.get(emu.url + "/api/internal/folder_paths").status_code == 404  # a sub-app: never under /api
