"""The notebook runner's kernel client never waits forever on a message whose wake-up was missed
(the merge explorer's hang under load: the kernel had run the cell and sat idle while the client
waited for its reply). Checked on real ZeroMQ sockets with the poll made to miss the message."""

from __future__ import annotations

import asyncio
from queue import Empty

import pytest
import zmq
import zmq.asyncio
from jupyter_client.session import Session

import l2s_kit.notebooks.kernel as kernel


def _pair():
    ctx = zmq.asyncio.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("inproc://steady")
    b.connect("inproc://steady")
    return ctx, a, b


def test_a_waiting_message_the_poll_missed_is_read(monkeypatch):
    async def run():
        ctx, a, b = _pair()
        session = Session()
        channel = kernel.SteadyChannel(b, session)
        session.send(a, "execute_reply", {"status": "ok"})
        await asyncio.sleep(0.05)

        async def blind(timeout=None, flags=zmq.POLLIN):  # an edge missed: poll sees nothing
            await asyncio.sleep((timeout or 0) / 1000)
            return 0

        monkeypatch.setattr(b, "poll", blind)
        before = kernel.RECOVERED["messages"]
        msg = await channel.get_msg(timeout=5)
        assert msg["msg_type"] == "execute_reply" and msg["content"] == {"status": "ok"}
        assert kernel.RECOVERED["messages"] == before + 1
        with pytest.raises(Empty):  # and nothing waiting is still a timeout
            await channel.get_msg(timeout=0.6)
        a.close()
        b.close()
        ctx.term()

    asyncio.run(run())


def test_a_silent_shell_channel_nudges_the_kernel(monkeypatch):
    monkeypatch.setattr(kernel, "NUDGE", 0.6)

    async def run():
        ctx, a, b = _pair()
        channel = kernel.SteadyChannel(b, Session())
        nudges = []
        channel.nudge = lambda: nudges.append(1)
        with pytest.raises(Empty):
            await channel.get_msg(timeout=2.2)
        assert len(nudges) in (2, 3)
        a.close()
        b.close()
        ctx.term()

    asyncio.run(run())


def test_the_runner_hands_papermill_the_steady_client():
    from jupyter_client.manager import AsyncKernelManager

    assert issubclass(kernel.SteadyKernelManager, AsyncKernelManager)
    km = kernel.SteadyKernelManager()
    client = km.client()
    assert isinstance(client, kernel.SteadyKernelClient)
    assert client.shell_channel_class is kernel.SteadyChannel
