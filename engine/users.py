"""ComfyUI's users: who a request acts for, the folder holding their files, and their editor settings.

Without `--multi-user` there is one user, "default", whatever a client says. With it, each client
names its user in the `comfy-user` header and only users created through `POST /users` (kept in
`users.json`) exist; each gets a folder of its own under the users folder, so one user's settings and
workflows are out of another's reach. A user id becomes a folder name, so only ids of letters, digits,
'-' and '_' are accepted, wherever they come from (a header, or a hand-edited users.json).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import uuid
from pathlib import Path
from typing import Any

from engine.folders import write_atomically

log = logging.getLogger(__name__)

DEFAULT_USER = "default"
USERS_FILE = "users.json"
SETTINGS_FILE = "comfy.settings.json"
USER_ID = re.compile(r"[A-Za-z0-9_-]{1,160}")
SYSTEM_USER_PREFIX = "__"
"""ComfyUI keeps ids starting with this for itself; no client may create or act as one."""
MAX_USERNAME_CHARS = 100
FIRST_RUN_FOLDERS = ("workflows", "subgraphs")
FIRST_RUN_FILES = {"user.css": b"", "comfy.templates.json": b"[]"}
"""What a new user's folder starts with. The editor lists both folders and reads both files on every
load; a fresh ComfyUI answers 404 for each, which the browser reports as console errors. An empty
folder, an empty stylesheet and an empty list of saved templates mean the same as none."""

FIRST_RUN_SETTINGS: dict[str, Any] = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Notification.ShowVersionUpdates": False,
}
"""Settings a user has until they set them: the editor opens on the default graph rather than a
tutorial, and does not ask the internet for ComfyUI releases (which this server is not)."""


class UnknownUserError(LookupError):
    """A request names a user this server does not have."""


class UserNameError(ValueError):
    """A name `POST /users` cannot create a user from."""


class Users:
    def __init__(self, root: Path, *, multi_user: bool) -> None:
        self.root = root
        self.multi_user = multi_user
        self._lock = threading.Lock()

    def known(self) -> dict[str, str]:
        """User id -> the name it was created with."""
        if not self.multi_user:
            return {DEFAULT_USER: DEFAULT_USER}
        path = self.root / USERS_FILE
        try:
            users = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("%s cannot be read, so no user is known: %s", path, exc)
            return {}
        if not isinstance(users, dict):
            log.error("%s must map user ids to names; no user is known", path)
            return {}
        return {str(key): str(value) for key, value in users.items() if _valid_id(str(key))}

    def user_id(self, header: str | None) -> str:
        """The user a request acts for, from its `comfy-user` header (ignored without --multi-user)."""
        if not self.multi_user:
            return DEFAULT_USER
        user = header if header is not None else DEFAULT_USER
        if not _valid_id(user) or user not in self.known():
            raise UnknownUserError(f"unknown user {user!r}: create one with POST /users")
        return user

    def folder(self, user_id: str) -> Path:
        """The user's folder (created on first use); `user_id` comes from `user_id`."""
        if not _valid_id(user_id):
            raise UnknownUserError(f"unknown user {user_id!r}")
        folder = self.root / user_id
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            for name in FIRST_RUN_FOLDERS:
                (folder / name).mkdir(exist_ok=True)
            for name, content in FIRST_RUN_FILES.items():
                write_atomically(folder / name, content)
        return folder

    def add(self, name: object) -> str:
        """Create a user and return its id: the name made folder-safe, then a random suffix."""
        if not isinstance(name, str) or not name.strip():
            raise UserNameError("username must be a non-empty string")
        name = name.strip()
        if len(name) > MAX_USERNAME_CHARS or any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise UserNameError(
                f"username must be at most {MAX_USERNAME_CHARS} characters, without control characters"
            )
        stem = re.sub(r"[^A-Za-z0-9_-]+", "-", name)
        if name.startswith(SYSTEM_USER_PREFIX) or stem.startswith(SYSTEM_USER_PREFIX):
            raise UserNameError(f"usernames starting with {SYSTEM_USER_PREFIX!r} are reserved")
        with self._lock:
            users = self.known()
            if name in users.values():
                raise UserNameError("Duplicate username.")
            user_id = f"{stem}_{uuid.uuid4()}"
            users[user_id] = name
            write_atomically(self.root / USERS_FILE, json.dumps(users, indent=2).encode())
        return user_id

    def settings(self, user_id: str) -> dict[str, Any]:
        """The user's editor settings, with the first-run defaults under them."""
        return {**FIRST_RUN_SETTINGS, **self._stored_settings(user_id)}

    def update_settings(self, user_id: str, changes: dict[str, Any]) -> None:
        """Merge `changes` into the stored settings (read, merge and write as one step)."""
        with self._lock:
            stored = self._stored_settings(user_id)
            stored.update(changes)
            path = self.folder(user_id) / SETTINGS_FILE
            write_atomically(path, json.dumps(stored, indent=4, allow_nan=False).encode())

    def _stored_settings(self, user_id: str) -> dict[str, Any]:
        path = self.folder(user_id) / SETTINGS_FILE
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            stored = exc
        if isinstance(stored, dict):
            return stored
        damaged = path.with_name(f"{SETTINGS_FILE}.damaged")
        log.error("%s is not a JSON object (%s); it was moved to %s", path, stored, damaged)
        os.replace(path, damaged)
        return {}


def _valid_id(user_id: str) -> bool:
    return USER_ID.fullmatch(user_id) is not None and not user_id.startswith(SYSTEM_USER_PREFIX)
