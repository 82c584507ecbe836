"""Nothing shaped like a credential is committed.

Credentials reach litpipe through the environment (``MLFLOW_TRACKING_PASSWORD``,
``AWS_SECRET_ACCESS_KEY``), ``.dvc/config.local`` (git ignores it) or files the server script
generates with mode 600 outside git. A key pasted into ``.dvc/config`` (``dvc remote modify``
without ``--local``), a password written into a params or ini file, or a private key copied
into the tree would reach every clone and stay in the history; this test fails first.

It scans every file git tracks, plus the untracked ones it would commit (not ignored), for:
AWS access key ids; assignments of a literal value to a name that says password, secret,
secret key or token (``password = hunter2``, ``secret_access_key: ...``, ``"token": "..."``);
and private-key headers. A value that is not literal is fine: ``$VAR``, ``${VAR}``,
``<placeholder>``, a call or expression in code (``password=read_secret()``). There is no
allow-list: the tests make their fixture credentials at run time (``secrets.token_hex``).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers.repo import ROOT

AWS_KEY_ID = re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Z0-9])")
PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
# NAME = VALUE / NAME: VALUE / "NAME": "VALUE", NAME ending in a secret's name.
ASSIGNMENT = re.compile(
    r"""(?ix)
    (?P<name>[\w.-]*(?:password|passwd|pwd|secret|secret_key|secret_access_key|token))
    ["']?\s*(?:=|:)(?!=)\s*
    (?P<value>"[^"\n]*"|'[^'\n]*'|[^\s,;#)\]}]+)
    """)
# Where an unquoted value is a variable or expression, not a literal.
CODE_SUFFIXES = {".py", ".sh", ".bash", ".js", ".ts", ".cjs", ".mjs"}


# An unquoted value that can be a secret: one plain token (not `os.environ[...]`, `$(cat`,
# `…`, `")`), at least 3 characters.
PLAIN_TOKEN = re.compile(r"[\w\-+/=.@!~^%&*?]{3,}", re.ASCII)


def literal(value: str, code: bool) -> str | None:
    """The literal secret ``value`` holds, or None (empty, a reference, a placeholder, or,
    in code, anything unquoted)."""
    quoted = value[:1] in "\"'" and value[-1:] == value[:1] and len(value) >= 2
    if not quoted and (code or not PLAIN_TOKEN.fullmatch(value)):
        return None
    text = value[1:-1] if quoted else value
    if not text.strip() or text[0] in "$<{%*(…),]" or text.startswith("...") or "${" in text:
        return None
    if code and ("{" in text or "$(" in text):  # an f-string or a command substitution
        return None
    return text


def findings(text: str, path: str) -> list[str]:
    """``path:line: what`` for every credential-shaped thing in ``text``."""
    code = Path(path).suffix in CODE_SUFFIXES
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if AWS_KEY_ID.search(line):
            found.append(f"{path}:{number}: an AWS access key id")
        if PRIVATE_KEY.search(line):
            found.append(f"{path}:{number}: a private key")
        for match in ASSIGNMENT.finditer(line):
            if literal(match["value"], code) is not None:
                found.append(f"{path}:{number}: a literal value for {match['name']}")
    return found


def committable_files() -> list[str]:
    """Tracked files, and untracked ones that are not ignored (the next commit's)."""
    proc = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                           "--exclude-standard"], cwd=ROOT, capture_output=True, check=True)
    return sorted({name for name in proc.stdout.decode().split("\0") if name})


def test_no_credentials_in_the_repository() -> None:
    problems = []
    for name in committable_files():
        path = ROOT / name
        if not path.is_file() or path.is_symlink():
            continue  # deleted in the work tree, or a link (its target is scanned)
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary (a picture, a model): no text to leak from
        problems += findings(data.decode("utf-8", errors="replace"), name)
    assert not problems, ("credential-shaped values in files git would commit (use the "
                          "environment or `dvc remote modify --local`):\n" + "\n".join(problems))


# Samples built at run time, so that this file itself holds none of them.
KEY_ID = "AKIA" + "Q" * 12 + "7" * 4
HEADER = "-----BEGIN " + "RSA PRIVATE KEY-----"
PW = "hunter" + "2"


@pytest.mark.parametrize("path,text", [
    (".dvc/config", f"['remote \"team\"']\n    access_key_id = {KEY_ID}\n"),
    (".dvc/config", f"    secret_access_key = {PW}\n"),
    ("params.yaml", f"tracking:\n  password: {PW}\n"),
    ("auth.ini", f"admin_password = {PW}\n"),
    ("deploy.json", f'{{"api_token": "{PW}"}}\n'),
    ("scripts/run.sh", f'MLFLOW_TRACKING_PASSWORD="{PW}" dvc repro\n'),
    ("src/x.py", f'client.login(password="{PW}")\n'),
    ("docs/keys.md", HEADER + "\nMIIEow...\n"),
])
def test_detects_what_it_must(path: str, text: str) -> None:
    assert findings(text, path), f"missed a credential in {path}: {text!r}"


@pytest.mark.parametrize("path,text", [
    ("scripts/x.sh", 'password="$(cat "$dir/pg_password")"\n'),
    ("tests/x.py", 'psycopg2.connect(password=(d / "pg_password").read_text())\n'),
    ("tests/x.py", "AUTH_PASSWORD = secrets.token_hex(8)\n"),
    ("docs/team.md", "export AWS_SECRET_ACCESS_KEY=<secret>\n"),
    ("docs/team.md", "MLFLOW_TRACKING_PASSWORD=$(cat .mlflow-server/users/ci)\n"),
    ("src/x.py", 'os.environ.get("MLFLOW_TRACKING_PASSWORD")\n'),
    ("src/x.py", 'token = f"{user}:{password}"\n'),
    ("auth.ini", "admin_password =\n"),
    ("docs/team.md", 'getpass.getpass("new password: "), current_password=os.environ["X"])\n'),
    ("docs/team.md", "export MLFLOW_TRACKING_USERNAME=… MLFLOW_TRACKING_PASSWORD=…\n"),
])
def test_leaves_references_alone(path: str, text: str) -> None:
    assert not findings(text, path)
