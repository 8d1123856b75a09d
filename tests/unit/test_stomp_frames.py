"""The fast STOMP frame parser and writer give what stompman's own give, for any way
the bytes are cut into chunks."""

from __future__ import annotations

import random

import pytest
import stompman
from stompman.serde import FrameParser as StompmanParser
from stompman.serde import dump_frame as stompman_dump

from selfpay.adapters.bridge.stomp_frames import FrameParser, dump_frame

BODY = '{"v":1,"type":"reply","payload":{"masked_name":"张*丰"}}'.encode()
STREAM = b"".join([
    b"CONNECTED\nversion:1.2\nheart-beat:5000,5000\nserver:ActiveMQ/5.17.2\n\n\x00",
    b"\n",  # heartbeat
    b"MESSAGE\nsubscription:1\nmessage-id:ID\\cbox-1\\c2\ndestination:/queue/a\n"
    b"content-length:" + str(len(BODY)).encode() + b"\ncorrelation-id:abc\n\n" + BODY + b"\x00",
    b"\r\n",  # heartbeat with CR
    b"MESSAGE\r\nsubscription:1\r\nmessage-id:2\r\ndestination:/queue/a\r\nx:1\r\nx:2\r\nlast:z\r\n\r\n"
    b"no length\x00",
    b"RECEIPT\nreceipt-id:r-7\n\n\x00\n\n",
    b"MESSAGE\nsubscription:2\nmessage-id:3\ncontent-length:5\ndestination:/queue/b\n\n"
    b"a\x00b\x00c\x00",  # a NUL inside a body with a content-length
    b"BOGUS\nx:y\n\nignored\x00",
    b"RECEIPT\r\nreceipt-id:crlf\r\n\r\n\x00",
    "MESSAGE\nsubscription:3\nmessage-id:4\ndestination:/queue/\u961f\u5217\n\n\x00".encode(),
    b"ERROR\nmessage:bad\\nthing\n\nboom\x00",
])


def frames_of(parser: object, chunks: list[bytes]) -> list[object]:
    """The frames other than heartbeats (which only show the peer is alive; stompman
    counts a CR LF between frames as none and we as one)."""
    out: list[object] = []
    for chunk in chunks:
        out.extend(parser.parse_frames_from_chunk(chunk))  # type: ignore[attr-defined]
    return [f for f in out if not isinstance(f, stompman.HeartbeatFrame)]


@pytest.mark.parametrize("seed", range(25))
def test_the_parser_reads_what_stompman_reads_however_the_stream_is_cut(seed: int) -> None:
    rnd = random.Random(seed)
    cuts = sorted(rnd.sample(range(1, len(STREAM)), rnd.randint(0, 40)))
    chunks = [STREAM[a:b] for a, b in zip([0, *cuts], [*cuts, len(STREAM)], strict=True)]
    assert frames_of(FrameParser(), chunks) == frames_of(StompmanParser(), [STREAM])


def test_an_eol_between_frames_is_a_heartbeat() -> None:
    assert list(FrameParser().parse_frames_from_chunk(b"\n")) == [stompman.HeartbeatFrame()]


def test_a_frame_is_only_returned_once_complete() -> None:
    parser = FrameParser()
    frame = b"MESSAGE\nsubscription:1\nmessage-id:9\ncontent-length:3\n\nabc\x00"
    assert list(parser.parse_frames_from_chunk(frame[:-1])) == []
    (got,) = parser.parse_frames_from_chunk(frame[-1:])
    assert isinstance(got, stompman.MessageFrame) and got.body == b"abc"


@pytest.mark.parametrize("frame", [
    stompman.SendFrame(headers={"destination": "/queue/a", "correlation-id": "x:y\\z\nw",
                                "content-length": "3"}, body=b"abc"),
    stompman.AckFrame(headers={"id": "ID:1:2", "subscription": "1"}),
    stompman.ConnectFrame(headers={"accept-version": "1.2", "host": "selfpay",
                                   "login": "u", "passcode": "p:w", "heart-beat": "0,0"}),
])
def test_the_writer_writes_what_stompman_writes(frame: stompman.AnyClientFrame) -> None:
    assert dump_frame(frame) == stompman_dump(frame)
    (back,) = FrameParser().parse_frames_from_chunk(dump_frame(frame))
    if not isinstance(frame, stompman.ConnectFrame):
        assert back.headers == frame.headers  # type: ignore[union-attr]
