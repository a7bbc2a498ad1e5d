"""A kernel client for running notebooks headless that never waits forever on a lost wake-up.

Under load, ``l2s notebooks run`` of the merge explorer (a cell that shows ipywidgets) was seen to
stop at a cell for good: the kernel had executed the cell (its execution count and output were
there) and sat idle, while papermill's client (nbclient over jupyter_client's asyncio channels)
went on waiting for the cell's ``execute_reply``. The message was lost to a missed wake-up of an
edge-triggered ZeroMQ socket: ipykernel 7 sends shell replies from its shell-channel thread on the
socket its stream also reads (ipython/ipykernel#1529, #1554), and an asyncio ``poll`` that misses
the socket's read edge does not see a message that is already waiting.

:class:`SteadyChannel` waits in short slices and, at the end of each, asks the socket itself
(``ZMQ_EVENTS``, which also runs its pending commands) whether a message is waiting; on the shell
channel, after :data:`NUDGE` seconds with nothing, it sends the kernel a ``kernel_info_request``
(its reply is ignored by nbclient, which waits for its own ``msg_id``), which wakes a kernel whose
own stream missed an edge. :class:`SteadyKernelManager` hands out such clients; the notebook
runner passes it to papermill.
"""

from __future__ import annotations

import time
from queue import Empty

import zmq
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.manager import AsyncKernelManager
from traitlets import DottedObjectName, Type

SLICE = 0.5  # seconds between direct checks of the socket
NUDGE = 10.0  # seconds of silence on the shell channel before the kernel is nudged
RECOVERED = {"messages": 0, "nudges": 0}  # what the checks found and did, this process


class SteadyChannel(AsyncZMQSocketChannel):
    """An asyncio channel whose ``get_msg`` cannot miss a message that is waiting."""

    nudge = None  # a callable sending the kernel a harmless request (the shell channel's)

    async def get_msg(self, timeout: float | None = None) -> dict:  # type:ignore[override]
        assert self.socket is not None
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        quiet_since = start
        while True:
            left = SLICE if deadline is None else max(0.0, min(SLICE, deadline - time.monotonic()))
            if await self.socket.poll(int(left * 1000)):
                return await self._recv()
            if self.socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:  # waiting, edge missed
                RECOVERED["messages"] += 1
                return await self._recv()
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise Empty
            if self.nudge is not None and now - quiet_since >= NUDGE:
                RECOVERED["nudges"] += 1
                self.nudge()
                quiet_since = now


class SteadyKernelClient(AsyncKernelClient):
    """jupyter_client's asyncio client with :class:`SteadyChannel` shell and IOPub channels."""

    shell_channel_class = Type(SteadyChannel)  # type:ignore[assignment]
    iopub_channel_class = Type(SteadyChannel)  # type:ignore[assignment]

    @property
    def shell_channel(self):
        channel = super().shell_channel
        if channel is not None and channel.nudge is None:
            channel.nudge = self.kernel_info
        return channel


class SteadyKernelManager(AsyncKernelManager):
    """An asyncio kernel manager whose clients are :class:`SteadyKernelClient`."""

    client_class = DottedObjectName("l2s_kit.notebooks.kernel.SteadyKernelClient")
    client_factory = Type(SteadyKernelClient, klass=AsyncKernelClient)
