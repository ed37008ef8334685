"""ComfyUI's `/users`, `/settings` and `/userdata`, in the shapes ComfyUI's user manager answers with.

The editor saves workflows through these routes (`workflows%2Fname.json`) and keeps its settings in
`comfy.settings.json`; the expected shapes and status codes are those of ComfyUI's app/user_manager.py
and app/app_settings.py (409 for an existing file with overwrite=false, 204 for a delete, a listing of
paths, `[path, *parts]` or `{path, size, modified}`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest

from engine.settings import Settings
from tests.api.conftest import LiveServer

BODY_LIMIT = 4096


@pytest.fixture
def single(settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(replace(settings, open_access=True, max_userdata_bytes=BODY_LIMIT)) as live:
        yield live


@pytest.fixture
def multi(settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(replace(settings, open_access=True, multi_user=True)) as live:
        yield live


def test_single_user_mode_reports_server_storage(single: LiveServer) -> None:
    with single.client() as client:
        assert client.get("/api/users").json() == {"storage": "server", "migrated": True}
        refused = client.post("/users", json={"username": "bob"})
        assert refused.status_code == 400 and "--multi-user" in refused.json()["error"]
        # The comfy-user header means nothing with one user: it cannot pick another folder.
        client.post("/userdata/a.json", content=b"1", headers={"comfy-user": "someone"})
    assert (single.settings.users_path / "default" / "a.json").read_bytes() == b"1"


def test_settings_start_with_first_run_defaults_and_round_trip(single: LiveServer) -> None:
    stored = single.settings.users_path / "default" / "comfy.settings.json"
    with single.client() as client:
        assert client.get("/settings").json() == {
            "Comfy.TutorialCompleted": True,
            "Comfy.Notification.ShowVersionUpdates": False,
        }
        assert client.post("/api/settings/Comfy.TutorialCompleted", json=False).status_code == 200
        assert (
            client.post("/settings", json={"Comfy.Locale": "fr", "My.List": [1, {"a": None}]}).status_code
            == 200
        )
        assert client.post("/settings/Comfy.Locale", json="de").status_code == 200
        expected = {"Comfy.TutorialCompleted": False, "Comfy.Locale": "de", "My.List": [1, {"a": None}]}
        assert json.loads(stored.read_text()) == expected
        assert client.get("/settings").json() == {**expected, "Comfy.Notification.ShowVersionUpdates": False}
        assert client.get("/settings/Comfy.Locale").json() == "de"
        assert client.get("/settings/Never.Set").json() is None
        for body, content in (("[1]", "/settings"), ("{", "/settings"), ('{"a": NaN}', "/settings")):
            response = client.post(content, content=body)
            assert response.status_code == 400, (body, response.text)
        assert client.post("/settings/x", content="Infinity").status_code == 400
        assert client.post("/settings/x", content="1e400").status_code == 400
        deep = '{"x": ' + "[" * 1500 + "]" * 1500 + "}"  # within the body limit, beyond Python's stack
        assert client.post("/settings", content=deep).status_code == 400
        assert client.post("/settings", json={"a/b": 1}).status_code == 400
        too_large = client.post("/settings/big", json="x" * BODY_LIMIT)
        assert too_large.status_code == 413 and str(BODY_LIMIT) in too_large.json()["error"]
        assert json.loads(stored.read_text()) == expected


def test_a_damaged_settings_file_is_set_aside_not_a_server_error(single: LiveServer) -> None:
    folder = single.settings.users_path / "default"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "comfy.settings.json").write_text("{not json")
    with single.client() as client:
        assert client.get("/settings").json()["Comfy.TutorialCompleted"] is True
    assert (folder / "comfy.settings.json.damaged").read_text() == "{not json"


def _names(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return response.json()


def test_workflows_are_saved_listed_moved_and_deleted(single: LiveServer) -> None:
    root = single.settings.users_path / "default"
    with single.client() as client:
        saved = client.post("/userdata/workflows%2Fa.json", content=b'{"nodes": []}')
        assert saved.json() == "workflows/a.json"
        info = client.post("/userdata/workflows%2Fsub%2Fb.json?full_info=true", content=b"{}").json()
        assert info["path"] == "workflows/sub/b.json" and info["size"] == 2
        assert isinstance(info["modified"], int) and info["modified"] > 1_600_000_000_000  # milliseconds
        assert (root / "workflows" / "sub" / "b.json").read_bytes() == b"{}"
        # ComfyUI decodes a second time: a client that encodes twice reaches the same file.
        assert client.get("/userdata/workflows%252Fa.json").content == b'{"nodes": []}'
        served = client.get("/api/userdata/workflows%2Fa.json")
        assert served.headers["content-type"].startswith("application/json")
        assert served.headers["content-disposition"].startswith("attachment;")

        exists = client.post("/userdata/workflows%2Fa.json?overwrite=false", content=b"other")
        assert exists.status_code == 409
        assert (root / "workflows" / "a.json").read_bytes() == b'{"nodes": []}'
        assert client.post("/userdata/workflows%2Fa.json", content=b"[]").status_code == 200
        assert (root / "workflows" / "a.json").read_bytes() == b"[]"

        assert _names(client.get("/userdata", params={"dir": "workflows"})) == ["a.json"]
        recursive = _names(client.get("/userdata", params={"dir": "workflows", "recurse": "true"}))
        assert recursive == ["a.json", "sub/b.json"]
        split = client.get("/userdata", params={"dir": "workflows", "recurse": "true", "split": "true"})
        assert split.json() == [["a.json", "a.json"], ["sub/b.json", "sub", "b.json"]]
        full = client.get("/userdata", params={"dir": "workflows", "recurse": "true", "full_info": "true"})
        assert [(entry["path"], entry["size"]) for entry in full.json()] == [("a.json", 2), ("sub/b.json", 2)]
        assert client.get("/userdata", params={"dir": "nothing"}).status_code == 404
        assert client.get("/userdata").status_code == 400

        v2 = [entry for entry in client.get("/v2/userdata").json() if entry["path"].startswith("workflows")]
        assert [(entry["path"], entry["type"]) for entry in v2] == [  # folders first, then by name
            ("workflows/sub", "directory"),
            ("workflows", "directory"),
            ("workflows/a.json", "file"),
            ("workflows/sub/b.json", "file"),
        ]
        assert client.get("/v2/userdata", params={"path": "workflows%2Fa.json"}).status_code == 400

        moved = client.post("/userdata/workflows%2Fa.json/move/workflows%2Fc.json")
        assert moved.json() == "workflows/c.json"
        assert not (root / "workflows" / "a.json").exists()
        assert client.post("/userdata/workflows%2Fa.json/move/workflows%2Fd.json").status_code == 404
        blocked = client.post("/userdata/workflows%2Fc.json/move/workflows%2Fsub%2Fb.json?overwrite=false")
        assert blocked.status_code == 409 and (root / "workflows" / "c.json").exists()
        replaced = client.post("/userdata/workflows%2Fc.json/move/workflows%2Fsub%2Fb.json?full_info=true")
        assert replaced.json()["path"] == "workflows/sub/b.json"
        assert (root / "workflows" / "sub" / "b.json").read_bytes() == b"[]"

        assert client.delete("/userdata/workflows%2Fsub%2Fb.json").status_code == 204
        assert client.delete("/userdata/workflows%2Fsub%2Fb.json").status_code == 404
        assert client.get("/userdata/workflows%2Fsub%2Fb.json").status_code == 404
        assert client.post("/userdata/workflows", content=b"x").status_code == 409  # a folder


def test_a_dangling_link_in_a_users_folder_is_listed_not_a_server_error(single: LiveServer) -> None:
    folder = single.settings.users_path / "default" / "workflows"
    folder.mkdir(parents=True)
    (folder / "gone.json").symlink_to(folder / "deleted.json")
    with single.client() as client:
        listing = client.get("/v2/userdata", params={"path": "workflows"})
        assert listing.json() == [{"name": "gone.json", "path": "workflows/gone.json", "type": "file"}]
        assert client.get("/userdata", params={"dir": "workflows"}).json() == []
        assert client.get("/userdata/workflows%2Fgone.json").status_code == 404


def test_userdata_bodies_are_bounded_and_scripts_are_not_served_as_pages(single: LiveServer) -> None:
    with single.client() as client:
        too_large = client.post("/userdata/big.json", content=b"x" * (BODY_LIMIT + 1))
        assert too_large.status_code == 413 and too_large.json()["limit_bytes"] == BODY_LIMIT
        assert client.post("/userdata/page.html", content=b"<script>1</script>").status_code == 200
        page = client.get("/userdata/page.html")
        assert page.headers["content-type"] == "application/octet-stream"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert client.post("/userdata/a.json?overwrite=perhaps", content=b"1").status_code == 400


def test_each_user_has_their_own_files_and_settings(multi: LiveServer) -> None:
    with multi.client() as client:
        assert client.get("/users").json() == {"storage": "server", "users": {}}
        alice = client.post("/users", json={"username": "alice"}).json()
        bob = client.post("/users", json={"username": "../../bob"}).json()
        assert re.fullmatch(r"alice_[0-9a-f-]{36}", alice)
        assert re.fullmatch(r"-bob_[0-9a-f-]{36}", bob)  # a name never becomes a path
        assert client.get("/users").json() == {
            "storage": "server",
            "users": {alice: "alice", bob: "../../bob"},
        }
        duplicate = client.post("/users", json={"username": "alice"})
        assert duplicate.status_code == 400 and duplicate.json()["error"] == "Duplicate username."
        for name in ("__system", "", None, "x" * 101, "tab\tname"):
            assert client.post("/users", json={"username": name}).status_code == 400, name

        as_alice, as_bob = {"comfy-user": alice}, {"comfy-user": bob}
        client.post("/userdata/workflows%2Fmine.json", content=b"alice's", headers=as_alice)
        client.post("/settings/Comfy.Locale", json="fr", headers=as_alice)
        assert client.get("/userdata/workflows%2Fmine.json", headers=as_bob).status_code == 404
        assert client.get("/userdata", params={"dir": "workflows"}, headers=as_bob).json() == []  # bob's own
        bobs = [entry["path"] for entry in client.get("/v2/userdata", headers=as_bob).json()]
        assert bobs and not any("mine" in path for path in bobs)
        assert client.delete("/userdata/workflows%2Fmine.json", headers=as_bob).status_code == 404
        assert client.get("/settings/Comfy.Locale", headers=as_bob).json() is None
        assert client.get("/userdata/workflows%2Fmine.json", headers=as_alice).content == b"alice's"
        assert client.get("/settings/Comfy.Locale", headers=as_alice).json() == "fr"
        # Another user's folder is not reachable by climbing out of one's own.
        climb = client.get(f"/userdata/..%2F{bob}%2Fworkflows%2Fmine.json", headers=as_alice)
        assert climb.status_code == 400
        for header in ({}, {"comfy-user": "mallory"}, {"comfy-user": "default"}):
            refused = client.get("/settings", headers=header)
            assert refused.status_code == 403 and "unknown user" in refused.json()["error"], header
    assert (multi.settings.users_path / alice / "workflows" / "mine.json").read_bytes() == b"alice's"
    assert list((multi.settings.users_path / bob / "workflows").iterdir()) == []
