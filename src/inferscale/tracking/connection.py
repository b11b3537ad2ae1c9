"""Whether an experiment's W&B runs can go online: a key, and a server that answers.

The mode is settled once per run, at the start of the flow (`settle_tracking`), before any
stage: the config the stages receive carries it, so the in-process runs (`start_run`) and the
training subprocesses (through `wandb_env`) all agree. Online tracking without a key is refused
there, and before that by `inferscale validate` and `inferscale run`; when the server does not
answer, the runs are written offline instead, to be uploaded later with `wandb sync`.
"""

from __future__ import annotations

import netrc
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from inferscale.config import ExperimentConfig
    from inferscale.tracking.wandb_runs import Mode

# How long the W&B server has to answer before the runs go offline.
ANSWER_TIMEOUT_S = 5.0
# What a proxy or gateway answers when the server behind it cannot be reached.
GATEWAY_ERRORS = frozenset({502, 503, 504})
KEY_FIX = "set WANDB_API_KEY, run `wandb login`, or set tracking.mode: offline"


class TrackingError(ValueError):
    """Online tracking that cannot work: one line naming the setting and the fix."""


def wandb_base_url() -> str:
    """The server wandb.init uses: WANDB_BASE_URL, else wandb's settings files, else its
    default (as wandb reads them, once per process)."""
    from wandb.sdk import wandb_setup

    return wandb_setup.singleton().settings.base_url


def missing_credentials(base_url: str) -> str | None:
    """Why wandb would find no credentials for `base_url`, or None when it finds some.

    wandb looks in WANDB_API_KEY (or WANDB_IDENTITY_TOKEN_FILE), then the netrc entry of the
    server's host (what `wandb login` writes), then its settings; it is asked here the same way
    wandb.init asks, without a prompt."""
    try:
        from wandb.errors import AuthenticationError
        from wandb.sdk.lib import wbauth
    except ImportError:  # an older wandb, without wbauth
        return None if _key_in_env_or_netrc(base_url) else "no W&B API key was found"
    try:
        auth = wbauth.authenticate_session(
            host=base_url, source="inferscale", prompt=False, update_session=False
        )
    except AuthenticationError as err:
        return f"the W&B API key found is not valid ({err})"
    except ValueError as err:
        return f"the W&B server address {base_url} is not valid ({err})"
    return None if auth else "no W&B API key was found"


def _key_in_env_or_netrc(base_url: str) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = os.environ.get("NETRC") or Path("~/.netrc").expanduser()
    try:
        entry = netrc.netrc(path).authenticators(urlsplit(base_url).netloc)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def check_credentials(mode: Mode, base_url: str | None = None) -> None:
    """Raise TrackingError when `mode` is online and wandb has no key for the server."""
    if mode != "online":
        return
    url = base_url or wandb_base_url()
    if problem := missing_credentials(url):
        raise TrackingError(f"tracking.mode is online but {problem} for {url}: {KEY_FIX}")


def server_answers(url: str, timeout_s: float = ANSWER_TIMEOUT_S) -> bool:
    """Whether `url` answers an HTTP request within `timeout_s` (name lookup included).

    Any answer counts, except a gateway's 502-504 (a proxy that cannot reach the server).
    Proxies come from the environment and from wandb's http(s)_proxy settings."""
    import requests

    proxies = _wandb_proxies()
    answered: list[bool] = []

    def ask() -> None:
        try:
            with requests.get(
                url, timeout=timeout_s, proxies=proxies, stream=True, allow_redirects=False
            ) as response:
                answered.append(response.status_code not in GATEWAY_ERRORS)
        except requests.RequestException:
            answered.append(False)

    # A thread bounds the name lookup too, which requests' timeout does not cover.
    thread = threading.Thread(target=ask, name="wandb-server-check", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(answered and answered[0])


def _wandb_proxies() -> dict[str, str]:
    from wandb.sdk import wandb_setup

    settings = wandb_setup.singleton().settings
    proxies = {"http": settings.http_proxy, "https": settings.https_proxy}
    return {scheme: proxy for scheme, proxy in proxies.items() if proxy}


def run_mode(mode: Mode, base_url: str, answers: Callable[[str], bool] = server_answers) -> Mode:
    """The mode an experiment's runs use: online only while the server answers."""
    if mode != "online" or answers(base_url):
        return mode
    return "offline"


def offline_warning(base_url: str, wandb_dir: Path) -> str:
    return (
        f"tracking.mode is online but the W&B server {base_url} cannot be reached (no answer "
        f"within {ANSWER_TIMEOUT_S:.0f} s): this run's W&B runs are written offline under "
        f"{wandb_dir}; upload them later with `wandb sync {wandb_dir}/offline-run-*`"
    )


def settle_tracking(
    config: ExperimentConfig,
    wandb_dir: Path,
    warn: Callable[[str], None],
    answers: Callable[[str], bool] = server_answers,
) -> ExperimentConfig:
    """The config with the tracking mode this run uses, decided before any stage.

    Online without a key raises TrackingError; online with a server that does not answer
    warns once and returns the config with `tracking.mode: offline`."""
    tracking = config.tracking
    if tracking.mode != "online":
        return config
    base_url = wandb_base_url()
    check_credentials(tracking.mode, base_url)
    if run_mode(tracking.mode, base_url, answers) == "online":
        return config
    warn(offline_warning(base_url, wandb_dir))
    return config.model_copy(update={"tracking": tracking.model_copy(update={"mode": "offline"})})
