"""How Serve runs the HTTP replica (its deployment options), apart from what it serves
(``serve.app``)."""

from typing import Any

from actors.core.config import HttpConfig


def replica_actor_options(http: HttpConfig) -> dict[str, Any]:
    """The replica's Ray options; the null endpoint of the HTTP benchmark takes the same,
    so its ceiling runs on the same replica machinery."""
    options: dict[str, Any] = {"num_cpus": http.replica_num_cpus}
    if http.user_code_in_main_loop:  # read by Serve when the replica process starts
        env = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}
        options["runtime_env"] = {"env_vars": env}
    return options


def ingress_options(http: HttpConfig) -> dict[str, Any]:
    """The ingress deployment's options (``build_app``)."""
    return {
        "ray_actor_options": replica_actor_options(http),
        "max_ongoing_requests": http.max_ongoing_requests,
        # A stopping replica still waits for its ongoing requests (up to Serve's
        # graceful_shutdown_timeout_s); it checks for them every 0.5 s, not after a first
        # 2 s sleep, so an idle one stops (Ctrl-C, a scale-down) 1.5 s sooner.
        "graceful_shutdown_wait_loop_s": 0.5,
    }
