"""`mirror up` honours [console]: the console runs as one more supervised process and its
one-time sign-in link is printed beside the terminal chat."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import ROOT
from tests.console.conftest import LINK, mirror, wait_for
from tests.fakes.server import free_port


def test_up_prints_the_sign_in_link_and_serves_the_console(
    tmp_path: Path, soul_file: Path, write_config: Callable[..., Path]
) -> None:
    shipped = (ROOT / "config" / "mirror.toml").read_text(encoding="utf-8")
    assert "[console]\nenabled = true" in shipped  # `make run` prints the link
    config = tmp_path / "shipped.toml"
    config.write_text(
        shipped.replace('"var/memory.db"', f'"{tmp_path / "memory.db"}"')
        .replace('"soul/SOUL.md"', f'"{soul_file}"')
        .replace('"var/log/mirror.log"', f'"{tmp_path / "mirror.log"}"')
        .replace("port = 8377", f"port = {free_port()}"),
        encoding="utf-8",
    )
    up = mirror("up", "--chat", "--config", str(config))
    try:
        link = LINK.search(up.wait_for_line(lambda line: "sign-in?token=" in line))
        assert link is not None

        def signs_in() -> httpx.Response | None:
            try:
                return httpx.get(link.group(1), timeout=2)
            except httpx.HTTPError:
                return None

        answer = wait_for(signs_in, 60, "the console under `mirror up`")
        assert answer.status_code == 303 and "mirror_console=" in answer.headers["set-cookie"]
        up.write("What is your name?")  # the terminal chat runs beside it
        up.wait_for_line(lambda line: "Wren" in line)
    finally:
        assert up.stop() == 0, up.tail()
