"""The README's commands, run as written against a live server.

A newcomer copies these commands first, so they have to work. Every ``sh`` block of the
five-minute tour runs in bash in a scratch directory, with the live server's address in
place of ``http://127.0.0.1:8000`` and this interpreter in place of ``.venv/bin/python``;
what the README says a command prints is checked against what it printed. The block that
waits for a person to pay at a browser is played the way the README says to play it
without one; the block with a placeholder for the reader (``<that phone>``) is not run.
The commands of the later sections (keys, the first admin, the scanner simulator) run
last, with their placeholders filled in from the tour.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from openplatform.sdk import PlatformClient
from tests.servers import process_env

ROOT = Path(__file__).resolve().parents[2]
README_ADDRESS = "http://127.0.0.1:8000"


def section_blocks(heading: str) -> list[str]:
    """The ``sh`` blocks of one ``##`` section of the README, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```sh\n(.*?)```", text[start : end if end > 0 else None], flags=re.S)


BLOCKS = section_blocks("Five-minute tour")


def needs_the_reader(block: str) -> bool:
    return re.search(r"<[a-z][a-z ]*>", block) is not None


class Tour:
    def __init__(self, server, workdir: Path) -> None:
        self.server, self.workdir = server, workdir
        self._counter_output = ""
        self.env = {**process_env(server.env), "PYTHONPATH": str(ROOT)}

    def counter_card(self) -> str:
        """What the tour's counter block printed (run once): the card, then its scans."""
        if not self._counter_output:
            self._counter_output = self.run(block_with("label.png"))
        return self._counter_output

    def script(self, block: str) -> str:
        return block.replace(README_ADDRESS, self.server.base_url).replace(".venv/bin/python", sys.executable)

    def run(self, block: str, timeout_s: float = 120) -> str:
        done = subprocess.run(
            ["bash", "-c", self.script(block)], cwd=self.workdir, env=self.env,
            capture_output=True, text=True, timeout=timeout_s,
        )  # fmt: skip
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        return done.stdout

    def run_with_payer(self, block: str, timeout_s: float = 120) -> str:
        """Run a block that prints a cashier URL and waits for the order to be paid: pay as
        the README's no-browser recipe says (``POST /cashier/<order_no>/pay`` with
        ``wechat_h5``, then the mock WeChat Pay confirm)."""
        process = subprocess.Popen(
            ["bash", "-c", self.script(block)], cwd=self.workdir, env={**self.env, "PYTHONUNBUFFERED": "1"},
            text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        timer = threading.Timer(timeout_s, process.kill)
        timer.start()
        try:
            lines = []
            for line in process.stdout:
                lines.append(line)
                found = re.search(r"/cashier/([0-9]{28})\b", line)
                if found:
                    self._pay(found[1])
                    break
            rest, errors = process.communicate()
        finally:
            timer.cancel()
        assert process.returncode == 0 and "Traceback" not in errors, errors[-3000:]
        return "".join(lines) + rest

    def _pay(self, order_no: str) -> None:
        base = self.server.base_url
        with httpx.Client(base_url=base, timeout=30) as web:
            action = web.post(f"/cashier/{order_no}/pay", json={"channel": "wechat_h5"})
            assert action.status_code == 200, action.text
            confirmed = web.post(f"/_mock/wechat/pay/orders/{order_no}/confirm")
            assert confirmed.status_code == 200, confirmed.text
            deadline = time.monotonic() + 30
            while web.get(f"/cashier/{order_no}/status").json()["status"] != "paid":
                assert time.monotonic() < deadline, "the order was not paid"
                time.sleep(0.1)


@pytest.fixture(scope="module")
def tour(live_server, tmp_path_factory) -> Tour:
    return Tour(live_server, tmp_path_factory.mktemp("tour"))


def block_with(marker: str) -> str:
    found = [block for block in BLOCKS if marker in block]
    assert len(found) == 1, f"the tour has {len(found)} blocks with {marker!r}: the README changed, update this test"
    return found[0]


def test_the_tour_is_where_this_test_looks_for_it():
    assert len(BLOCKS) >= 6
    assert [block for block in BLOCKS if needs_the_reader(block)] == [block_with("<that phone>")]


def test_1_is_it_up_and_the_demo_credentials(tour):
    output = tour.run(block_with("/healthz"))
    assert "HTTP/1.1 200" in output and "X-Request-Id" in output.replace("x-request-id", "X-Request-Id")
    assert '{"status":"ready","database":"ok","cache":"ok"}' in output.replace(" ", "")
    assert '"institution"' in output and '"terminal"' in output


def test_2_a_signed_terminal_registration_and_its_approval(tour):
    lines = tour.run(block_with("/inst/v1/terminals")).splitlines()
    assert len(lines) == 3, lines
    assert "'kind': 'institution'" in lines[0] and lines[1].endswith(" pending") and lines[2] == "approved"


def test_3_a_card_at_the_counter_its_static_code_and_label(tour):
    lines = tour.counter_card().splitlines()
    health_card_id, masked_number = lines[0].split()
    assert re.fullmatch(r"[0-9A-F]{64}", health_card_id) and "*" in masked_number and "610102199003070024" not in lines[0]
    assert lines[1:] == ["registration 200 ok", "payment 403 SCENE_REQUIRES_DYNAMIC"]
    assert (tour.workdir / "label.png").read_bytes().startswith(b"\x89PNG")


def test_4_the_registry_lists_residents(tour):
    output = tour.run(block_with("/_mock/registry/people?limit=3"))
    assert '"items"' in output and '"phone"' in output


def test_5_a_claimed_cards_dynamic_code_scanned_twice(tour):
    output = tour.run(block_with("mocks.scanner"))
    code_line = (tour.workdir / "code.txt").read_text().split()
    assert re.fullmatch(r"[0-9A-F]{64}:0:[0-9A-F]{32}", code_line[0]) and code_line[1:3] == ["expires", "at"]
    first, second = re.findall(r'"status": (\d+)', output)[:2]
    assert (first, second) == ("200", "409") and '"CODE_USED"' in output and '"ok"' in output


def test_6_a_bill_paid_refunded_and_notified(tour):
    output = tour.run_with_payer(block_with("/cashier/v1/orders"))
    lines = output.splitlines()
    assert lines[0].startswith("open in a browser: ") and "/cashier/" in lines[0]
    assert lines[1] == "paid" and lines[2] in ("processing", "succeeded"), lines
    assert sorted(lines[3:]) == ["order.paid platform", "refund.succeeded platform"], lines


def test_7_the_commands_of_the_later_sections(tour):
    """Keys, the first admin and the scanner simulator, with the tour's card in the
    placeholders (``keys rotate`` changes the server's key file: this test runs last)."""
    keys, = section_blocks("Card IDs and keys")
    key_file = tour.workdir / "secure" / "ehc-keys.json"
    key_file.parent.mkdir()
    output = tour.run(keys.replace("/secure/ehc-keys.json", str(key_file)))
    versions, rotated, generated = output.splitlines()
    assert set(json.loads(versions)) == {"security", "protection", "data", "index"}
    assert rotated.startswith("protection key is now version 2")
    assert generated.startswith(f"new key file {key_file}") and key_file.stat().st_mode & 0o777 == 0o600
    server_keys = json.loads((Path(tour.server.env["EHC_VAR_DIR"]) / "dev-keys.json").read_text())["keys"]
    assert len(server_keys["protection"]) == 2
    assert not any(item["key"] in output for items in server_keys.values() for item in items)

    first_admin, = section_blocks("Access management")
    admin = json.loads(tour.run(first_admin))
    with PlatformClient(tour.server.base_url, admin["client_id"], admin["secret"]) as operator:
        assert operator.get(f"/admin/v1/admins/{admin['client_id']}").json()["name"] == "平台运营"

    simulator, = section_blocks("Tests")
    health_card_id = tour.counter_card().split()[0]
    script = simulator.replace("<health_card_id>", health_card_id).replace("<VUID>", health_card_id)
    presets, registered, static_in_payment = re.split(r"\n(?=\{)", tour.run(script).strip())
    assert "sticker_worn" in json.loads(presets)
    scan = json.loads(registered)
    assert (scan["status"], scan["reply"]["result"]) == (200, "ok") and scan["text"] == f"{health_card_id}:1"
    refused = json.loads(static_in_payment)
    assert refused["reply"]["code"] == "SCENE_REQUIRES_DYNAMIC" and refused["second_check"]["status"] == 200
