"""Fuzzed wire parsers (issue 16): the Dobot reply parser and command splitter, the 1440-byte
feedback stream, the Feetech packet parser. Each either accepts its input or reports it with the
module's own named error, in bounded time, whatever the bytes and however a stream is split."""

import time

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hardware import dobot_protocol as dp
from hardware import feetech as ft

FUZZ = settings(max_examples=80, deadline=2000)  # a generous deadline: a hang fails, a busy core does not
FEW = settings(max_examples=40, deadline=2000)


@st.composite
def splits(draw, data: bytes) -> list[bytes]:
    """``data`` cut at arbitrary points (empty pieces included)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def feed_all(parser, pieces: list[bytes]) -> list:
    return [item for piece in pieces for item in parser.feed(piece)]


# ----------------------------------------------------------------------------- Dobot replies
NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,11}", fullmatch=True)
ATOMS = st.one_of(st.integers(-10**6, 10**6), st.floats(-1e6, 1e6, allow_nan=False),
                  st.from_regex(r"[A-Za-z0-9_.\-]{1,8}", fullmatch=True))
PARAMS = st.lists(st.one_of(ATOMS, st.lists(ATOMS, max_size=6)), max_size=6)


@st.composite
def replies(draw) -> tuple[bytes, tuple]:
    """One well-formed reply on the wire and what it must parse to."""
    error_id = draw(st.one_of(st.just(0), st.integers(-49999, 0)))
    values = draw(PARAMS)
    command = dp.format_command(draw(NAMES), *draw(PARAMS))
    text = dp.format_reply(error_id, values, command)
    expected = (error_id, tuple(dp._format_value(v) for v in values), command.split("(")[0], command)
    return text.encode(), expected


def key(reply: dp.Reply) -> tuple:
    return reply.error_id, reply.values, reply.name, reply.command


def only_replies(items: list) -> list[tuple]:
    assert all(isinstance(x, (dp.Reply, dp.ProtocolError)) for x in items), items
    return [key(x) for x in items if isinstance(x, dp.Reply)]


SEPARATORS = st.sampled_from([b"", b"\r\n", b" ", b";"])


@FUZZ
@given(st.lists(st.tuples(replies(), SEPARATORS), min_size=1, max_size=6), st.data())
def test_replies_split_anywhere_parse_as_in_one_feed(rs, data):
    stream = b"".join(r + sep for (r, _), sep in rs)
    expected = [e for (_, e), _ in rs]
    whole = dp.ReplyParser()
    assert [key(x) for x in whole.feed(stream)] == expected
    parser = dp.ReplyParser()
    assert [key(x) for x in feed_all(parser, data.draw(splits(stream)))] == expected
    assert parser.pending == whole.pending == ""


PROTOCOL_BYTES = st.lists(st.sampled_from(list(b"0123456789-,{}()[];= \r\nAbz\xff\x00")), max_size=400).map(bytes)


@FUZZ
@given(st.one_of(st.binary(max_size=400), PROTOCOL_BYTES), st.data())
@example(b"1" * 5000 + b",{},Tool(1);", None)  # an ErrorID too long for int()
def test_reply_garbage_gives_only_replies_and_protocol_errors(junk, data):
    parser = dp.ReplyParser()
    pieces = [junk] if data is None else data.draw(splits(junk))
    items = feed_all(parser, pieces)
    only_replies(items)
    assert len(parser.pending) <= dp.ReplyParser.MAX_REPLY
    for item in items:
        if isinstance(item, dp.Reply):
            try:
                item.floats()
            except dp.ProtocolError:
                pass


@FUZZ
@given(st.one_of(st.binary(max_size=300), PROTOCOL_BYTES), st.lists(replies(), min_size=1, max_size=4), st.data())
def test_a_reply_after_garbage_and_its_semicolon_is_recovered(junk, rs, data):
    """A reply ends at its ``;`` and never holds one, so the replies after the garbage's first
    ``;`` come out whole, however the garbage looked and the stream was split."""
    junk = junk.replace(b";", b"")
    stream = junk + b";" + b"".join(r for r, _ in rs)
    got = only_replies(feed_all(dp.ReplyParser(), data.draw(splits(stream))))
    assert got[len(got) - len(rs):] == [e for _, e in rs]


@FUZZ
@given(st.lists(replies(), min_size=2, max_size=5), st.data())
def test_a_truncated_reply_costs_at_most_the_reply_after_it(rs, data):
    """A reply cut short (a dropped segment) merges with the next one up to that one's ``;``;
    the replies after it are still parsed."""
    first = rs[0][0]
    cut = data.draw(st.integers(1, len(first) - 2))  # keeps neither the closing ')' nor the ';'
    stream = first[:cut] + b"".join(r for r, _ in rs[1:])
    got = only_replies(feed_all(dp.ReplyParser(), data.draw(splits(stream))))
    tail = [e for _, e in rs[2:]]
    assert got[len(got) - len(tail):] == tail and len(got) >= len(tail)


def test_a_reply_arriving_byte_by_byte_up_to_the_size_limit_takes_bounded_time():
    """Every feed rescans the pending reply: the size limit bounds the cost of a peer that drips
    an endless reply one byte at a time."""
    parser = dp.ReplyParser()
    drip = b"0,{" + b"{" * (dp.ReplyParser.MAX_REPLY - 2)  # one byte over the limit
    t0 = time.perf_counter()
    items = feed_all(parser, [drip[i:i + 1] for i in range(len(drip))])
    assert time.perf_counter() - t0 < 20
    assert len(items) == 1 and "too long" in str(items[0])
    assert parser.feed(b";0,{},Tool(1);")[-1].name == "Tool"


# ----------------------------------------------------------------------------- Dobot commands
@st.composite
def commands(draw) -> bytes:
    name = draw(NAMES)
    kwargs = draw(st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True), ATOMS, max_size=3))
    return dp.format_command(name, *draw(PARAMS), **kwargs).encode()


@FUZZ
@given(st.lists(st.tuples(commands(), SEPARATORS), min_size=1, max_size=6), st.data())
def test_commands_split_anywhere_parse_as_in_one_feed(cs, data):
    stream = b"".join(c + sep for c, sep in cs)
    expected = [dp.parse_command(c.decode()) for c, _ in cs]
    assert dp.CommandSplitter().feed(stream) == expected
    assert feed_all(dp.CommandSplitter(), data.draw(splits(stream))) == expected


COMMAND_BYTES = st.lists(st.sampled_from(list(b"AbZ_09(){}[],=;# \r\n\xff")), max_size=400).map(bytes)


@FUZZ
@given(st.one_of(st.binary(max_size=400), COMMAND_BYTES), st.data())
@example(b"Tool(}", None)  # closed by a brace: the splitter raised instead of reporting it
def test_command_garbage_gives_only_commands_and_protocol_errors(junk, data):
    splitter = dp.CommandSplitter()
    pieces = [junk] if data is None else data.draw(splits(junk))
    items = feed_all(splitter, pieces)
    assert all(isinstance(x, (dp.Command, dp.ProtocolError)) for x in items), items


@FUZZ
@given(st.text(max_size=200))
def test_parse_command_accepts_or_raises_protocol_error(text):
    try:
        cmd = dp.parse_command(text)
    except dp.ProtocolError:
        return
    assert cmd.text == text.strip()


@FUZZ
@given(st.lists(st.sampled_from(list(b"0123456789#$%&*!?-+ \r\n")), max_size=100).map(bytes),
       st.lists(commands(), min_size=1, max_size=4), st.data())
@example(b"12#$ ", [b"RobotMode()"], None)
def test_a_command_after_garbage_is_recovered(junk, cs, data):
    """Bytes that cannot start a command are reported and skipped, whatever segment boundaries
    cut the command after them (its name included)."""
    stream = junk + b"".join(cs)
    pieces = [stream] if data is None else data.draw(splits(stream))
    items = feed_all(dp.CommandSplitter(), pieces)
    assert [x for x in items if isinstance(x, dp.Command)] == [dp.parse_command(c.decode()) for c in cs]


# ----------------------------------------------------------------------------- feedback stream
def packet(i: int, **fields) -> bytes:
    """A valid packet that names itself by its timestamp."""
    return dp.encode_feedback(timestamp_ms=1000 + 8 * i, robot_mode=5, q_actual=[-90, 0, -90, 0, 90, 90], **fields)


def stamps(batch: dp.FeedbackBatch) -> list[int]:
    return [fb.timestamp_ms for fb in batch.packets]


def take_all(pieces: list[bytes]) -> tuple[list[int], int, bytearray]:
    """Drive :func:`take_feedback` as the reader does: stamps recovered, rejections, what is left."""
    buf, got, rejected = bytearray(), [], 0
    for piece in pieces:
        buf += piece
        batch = dp.take_feedback(buf)
        assert all(isinstance(e, dp.ProtocolError) for e in batch.rejected)
        got += stamps(batch)
        rejected += len(batch.rejected)
        assert len(buf) < dp.PACKET_SIZE
    return got, rejected, buf


@FEW
@given(st.binary(max_size=3000) | st.integers(0, 3000).map(bytes))
def test_decode_feedback_of_any_bytes_decodes_or_raises_protocol_error(buf):
    try:
        dp.decode_feedback(buf)
    except dp.ProtocolError:
        assert len(buf) != dp.PACKET_SIZE or buf[dp.TEST_VALUE_OFFSET:dp.TEST_VALUE_OFFSET + 8] != dp.TEST_VALUE_BYTES \
            or buf[:2] != b"\xa0\x05"


@FEW
@given(st.binary(min_size=dp.PACKET_SIZE - 56, max_size=dp.PACKET_SIZE - 56), st.binary(min_size=2, max_size=2),
       st.booleans())
def test_a_packet_decodes_exactly_when_its_size_and_test_value_are_right(body, size, right_test):
    raw = bytearray(size + bytes(46) + (dp.TEST_VALUE_BYTES if right_test else b"\x00" * 8) + body)
    ok = size == b"\xa0\x05" and right_test
    try:
        dp.decode_feedback(bytes(raw))
        assert ok
    except dp.ProtocolError as e:
        assert not ok and ("test value" in str(e) or "MessageSize" in str(e))


@FUZZ
@given(st.integers(1, 5), st.data())
def test_packets_split_anywhere_are_all_recovered(n, data):
    stream = b"".join(packet(i) for i in range(n))
    got, rejected, left = take_all(data.draw(splits(stream)))
    assert got == [1000 + 8 * i for i in range(n)] and rejected == 0 and not left


@FUZZ
@given(st.integers(1, dp.PACKET_SIZE - 1), st.integers(1, 4), st.data())
def test_a_stream_starting_mid_packet_resynchronises_on_the_next_packet(start, n, data):
    stream = packet(-1)[start:] + b"".join(packet(i) for i in range(n))
    got, _, _ = take_all(data.draw(splits(stream)))
    assert got == [1000 + 8 * i for i in range(n)]


@FUZZ
@given(st.binary(max_size=3000), st.integers(1, 4), st.data())
def test_garbage_before_the_packets_costs_at_most_the_first(junk, n, data):
    """Random bytes before a stream: with no packet header in them every packet is recovered; a
    stray MessageSize among them can swallow the first packet at most."""
    stream = junk + b"".join(packet(i) for i in range(n))
    got, rejected, _ = take_all(data.draw(splits(stream)))
    want = [1000 + 8 * i for i in range(n)]
    if b"\xa0\x05" not in junk and dp.TEST_VALUE_BYTES not in junk:
        assert got == want
    else:
        assert set(want[1:]) <= set(got)
    assert rejected >= (len(junk) >= dp.PACKET_SIZE or (bool(junk) and bool(got)))


@FUZZ
@given(st.lists(st.sampled_from(["good", "test value", "size"]), min_size=1, max_size=6), st.data())
def test_bad_packets_are_rejected_and_the_good_ones_around_them_kept(kinds, data):
    pieces = []
    for i, kind in enumerate(kinds):
        p = bytearray(packet(i))
        if kind == "test value":
            p[dp.TEST_VALUE_OFFSET] ^= 0xFF
        elif kind == "size":
            p[0] ^= 0x01
        pieces.append(bytes(p))
    got, rejected, _ = take_all(data.draw(splits(b"".join(pieces))))
    assert got == [1000 + 8 * i for i, kind in enumerate(kinds) if kind == "good"]
    assert rejected >= 1 if set(kinds) - {"good"} else rejected == 0  # one resync may skip several


# ----------------------------------------------------------------------------- Feetech packets
SERVO_BYTES = st.lists(st.sampled_from([0xFF, 0xFF, 0xFE, 0x00, 0x01, 0x02, 0x15, 0x16, 0x05, 0x7F]),
                       max_size=80).map(bytes)


def parse_stream(buf: bytearray) -> list[ft.Packet | ft.FeetechChecksumError]:
    """Drive :func:`feetech.parse_packet` over a buffer as a reader does, skipping corrupt packets."""
    out: list[ft.Packet | ft.FeetechChecksumError] = []
    while True:
        n = len(buf)
        try:
            packet_, used = ft.parse_packet(buf)
        except ft.FeetechChecksumError as e:
            assert 0 < e.args[1] <= n
            del buf[:e.args[1]]
            out.append(e)
            continue
        assert 0 <= used <= n
        del buf[:used]
        if packet_ is None:
            return out
        assert used > 0
        out.append(packet_)


@FUZZ
@given(st.binary(max_size=300) | SERVO_BYTES)
def test_parse_packet_of_any_bytes_returns_consumes_or_raises_a_checksum_error(junk):
    items = parse_stream(bytearray(junk))
    for item in items:
        if isinstance(item, ft.Packet):  # whatever was accepted has a right checksum
            assert item == ft.parse_packet(ft.status_packet(item.servo_id, item.code, item.params))[0]


STATUS = st.builds(ft.status_packet, st.integers(0, 0xFD), st.integers(0, 0xFF), st.binary(max_size=8))


@FUZZ
@given(st.lists(STATUS, min_size=1, max_size=5), st.binary(max_size=60).map(lambda b: b.replace(b"\xff", b"")),
       st.data())
def test_packets_after_noise_split_anywhere_are_recovered(packets, noise, data):
    """Noise without an ``FF FF`` header is skipped; every packet after it is parsed, however the
    bytes arrive."""
    stream = noise + b"".join(packets)
    buf, got = bytearray(), []
    for piece in data.draw(splits(stream)):
        buf += piece
        got += parse_stream(buf)
    assert got == [ft.parse_packet(p)[0] for p in packets]


@FUZZ
@given(STATUS, st.data())
def test_a_corrupted_or_truncated_status_packet_is_never_accepted(pkt, data):
    truncated = pkt[:data.draw(st.integers(0, len(pkt) - 1))]
    assert parse_stream(bytearray(truncated)) == []  # waits for the rest
    i = data.draw(st.integers(4, len(pkt) - 1))  # the code, a parameter or the checksum
    bad = bytearray(pkt)
    bad[i] ^= data.draw(st.integers(1, 0xFF))
    (item,) = parse_stream(bad)
    assert isinstance(item, ft.FeetechChecksumError)


class ScriptedPort:
    """A serial port that answers each write with scripted chunks (a bus without a servo)."""

    path = "scripted"

    def __init__(self, chunks: list[bytes]):
        self.chunks, self.written = list(chunks), []

    def flush_input(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def read_available(self, timeout_s: float) -> bytes:
        if self.chunks:
            return self.chunks.pop(0)
        time.sleep(min(timeout_s, 0.001))
        return b""


@FEW
@given(st.sampled_from([(ft.PING, b""), (ft.READ, bytes([56, 2])), (ft.WRITE, bytes([40, 1]))]),
       st.booleans(), st.binary(max_size=20).map(lambda b: b.replace(b"\xff", b"")), st.data())
def test_read_status_skips_the_echo_of_its_instruction_and_noise(instr, echo, noise, data):
    """A half-duplex adapter echoes the instruction packet (same ID): that is not a status with
    error bits set. Noise and arbitrary segment boundaries do not matter."""
    code, params = instr
    answer = bytes([1, 2]) if code == ft.READ else b""
    sent = ft.instruction_packet(21, code, params)
    stream = (sent if echo else b"") + noise + ft.status_packet(21, 0, answer)
    bus = ft.FeetechBus(ScriptedPort(data.draw(splits(stream))), timeout_s=0.05, retries=0)
    assert bus.transact(21, code, params, "fuzz") == answer


@settings(FEW, suppress_health_check=[HealthCheck.too_slow])  # an example that times out waits its 10 ms
@given(st.binary(max_size=120) | SERVO_BYTES, st.data())
def test_read_status_of_any_bytes_returns_or_raises_a_feetech_error(junk, data):
    bus = ft.FeetechBus(ScriptedPort(data.draw(splits(junk))), timeout_s=0.01, retries=0)
    t0 = time.monotonic()
    try:
        params = bus.transact(21, ft.READ, bytes([56, 2]), "fuzz")
        assert isinstance(params, bytes)
    except ft.FeetechError:
        pass
    assert time.monotonic() - t0 < 1.0

