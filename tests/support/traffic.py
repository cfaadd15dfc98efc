"""Concurrent episode traffic while another thread keeps switching the gateway's adapter:
the setting in which a call could be attributed to the wrong weights."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["traffic_across_adapter_switches"]


def traffic_across_adapter_switches(
    gateway: Any,
    clients: Sequence[Any],
    adapters: Mapping[str, Path],
    *,
    calls_each: int,
    max_tokens: int,
    switch_every_s: float,
) -> list[Any]:
    """Each client makes ``calls_each`` greedy chat calls while the gateway cycles through
    ``adapters`` and the base model; the calls it recorded."""
    stop = threading.Event()

    def traffic(index: int) -> None:
        for call in range(calls_each):
            clients[index].chat.completions.create(
                model="policy",
                messages=[{"role": "user", "content": f"episode {index} call {call}"}],
                max_tokens=max_tokens,
                temperature=0,
            )

    def switcher() -> None:
        order = [*adapters.items(), (None, None)]
        turn = 0
        while not stop.is_set():
            gateway.use_adapter(*order[turn % len(order)])
            turn += 1
            stop.wait(switch_every_s)

    swapping = threading.Thread(target=switcher)
    swapping.start()
    workers = [threading.Thread(target=traffic, args=(i,)) for i in range(len(clients))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stop.set()
    swapping.join()
    return gateway.drain_calls()
