"""Tests for the SMPP 3.4 PDU codec (hongyan.channels.smpp.pdu)."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hongyan.channels.smpp.pdu import (
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    CommandId,
    CommandStatus,
    ConcatInfo,
    DataCoding,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    EsmClass,
    GenericNack,
    MessageState,
    Pdu,
    PduError,
    PduReader,
    Receipt,
    SubmitSm,
    SubmitSmResp,
    Tlv,
    TlvTag,
    Unbind,
    UnbindResp,
    decode,
    encode,
    format_receipt_text,
    is_delivery_receipt,
    normalise_message_id,
    parse_receipt_text,
    split_udh,
    stat_to_state,
    state_to_stat,
    udh_concat,
    udh_concat16,
)
from hongyan.channels.smpp.pdu import _BodyReader as BodyReader
from hongyan.channels.smpp.pdu import _parse_receipt_fields as parse_receipt_fields

S = CommandStatus


def h(text: str) -> bytes:
    """Hex with spaces/newlines allowed -> bytes."""
    return bytes.fromhex("".join(text.split()))


# --------------------------------------------------------------------------- vectors


def test_bind_transmitter_vector() -> None:
    # Header: command_length 0x2A (16 + 26), command_id 0x00000002, status 0, sequence 1.
    # Body:   system_id "smppclient1\0" (12), password "password\0" (9), system_type "\0",
    #         interface_version 0x34, addr_ton 0, addr_npi 0, address_range "\0".
    expected = h(
        """
        0000002a 00000002 00000000 00000001
        736d7070636c69656e743100
        70617373776f726400
        00
        34 00 00
        00
        """
    )
    pdu = BindTransmitter(sequence_number=1, system_id="smppclient1", password="password")
    assert encode(pdu) == expected
    assert decode(expected) == pdu


def test_bind_transceiver_resp_vector_with_sc_interface_version() -> None:
    # command_length 0x1A (16 + 10), command_id 0x80000009, status 0, sequence 1.
    # Body: system_id "SMSC\0" then TLV sc_interface_version: tag 0x0210, length 1, 0x34.
    expected = h("0000001a 80000009 00000000 00000001 534d534300 0210 0001 34")
    pdu = BindTransceiverResp(
        sequence_number=1, system_id="SMSC", tlvs=[Tlv.u8(TlvTag.SC_INTERFACE_VERSION, 0x34)]
    )
    assert encode(pdu) == expected
    decoded = decode(expected)
    assert decoded == pdu
    assert isinstance(decoded, BindTransceiverResp)
    assert decoded.sc_interface_version == 0x34


def test_submit_sm_ucs2_with_udh_vector() -> None:
    # command_length 0x3F (16 + 47), command_id 0x00000004, status 0, sequence 3.
    # Body: service_type "\0"; source ton 5 npi 0 "Hongyan\0"; dest ton 1 npi 1
    # "8613800138000\0"; esm_class 0x40 (UDHI), protocol_id 0, priority 0;
    # schedule_delivery_time "\0", validity_period "\0"; registered_delivery 1,
    # replace_if_present 0, data_coding 8 (UCS-2), sm_default_msg_id 0;
    # sm_length 0x0A; short_message = UDH 05 00 03 2A 02 01 + UTF-16BE "你好" (4F60 597D).
    expected = h(
        """
        0000003f 00000004 00000000 00000003
        00
        05 00 486f6e677961 6e00
        01 01 3836313338303031333830303000
        40 00 00
        00 00
        01 00 08 00
        0a 050003 2a 02 01 4f60 597d
        """
    )
    message = udh_concat(0x2A, 2, 1) + "你好".encode("utf-16-be")
    pdu = SubmitSm(
        sequence_number=3,
        source_addr_ton=5,
        source_addr="Hongyan",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="8613800138000",
        esm_class=EsmClass.UDHI,
        registered_delivery=1,
        data_coding=DataCoding.UCS2,
        short_message=message,
    )
    assert encode(pdu) == expected
    decoded = decode(expected)
    assert decoded == pdu
    assert isinstance(decoded, SubmitSm)
    info, payload = split_udh(decoded.short_message)
    assert info == ConcatInfo(0x2A, 2, 1, 8)
    assert payload.decode("utf-16-be") == "你好"


def test_submit_sm_resp_vector() -> None:
    # command_length 0x17 (16 + 7), command_id 0x80000004, status 0, sequence 2;
    # body: message_id "1a2b3c\0".
    expected = h("00000017 80000004 00000000 00000002 31613262336300")
    pdu = SubmitSmResp(sequence_number=2, message_id="1a2b3c")
    assert encode(pdu) == expected
    assert decode(expected) == pdu


RECEIPT_TEXT = (
    b"id:1a2b3c sub:001 dlvrd:001 submit date:2401021530 done date:2401021531"
    b" stat:DELIVRD err:000 text:Hello"
)  # 103 octets = 0x67


def test_deliver_sm_receipt_vector_with_tlvs() -> None:
    # command_length 0xB3 (16 + 163), command_id 0x00000005, status 0, sequence 9.
    # Body: service_type "\0"; source ton 1 npi 1 "8613800138000\0"; dest ton 5 npi 0
    # "Hongyan\0"; esm_class 0x04 (SMSC delivery receipt); protocol_id 0, priority 0;
    # schedule "\0", validity "\0"; registered_delivery 0, replace 0, data_coding 0,
    # sm_default_msg_id 0; sm_length 0x67 + receipt text; then TLVs:
    # receipted_message_id 001E/0007 "1a2b3c\0", message_state 0427/0001 02 (DELIVERED),
    # network_error_code 0423/0003 03 0000 (GSM, code 0).
    assert len(RECEIPT_TEXT) == 0x67
    expected = (
        h(
            """
            000000b3 00000005 00000000 00000009
            00
            01 01 3836313338303031333830303000
            05 00 486f6e677961 6e00
            04 00 00
            00 00
            00 00 00 00
            67
            """
        )
        + RECEIPT_TEXT
        + h("001e 0007 31613262336300  0427 0001 02  0423 0003 03 0000")
    )
    pdu = DeliverSm(
        sequence_number=9,
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="8613800138000",
        dest_addr_ton=5,
        destination_addr="Hongyan",
        esm_class=EsmClass.MC_DELIVERY_RECEIPT,
        short_message=RECEIPT_TEXT,
        tlvs=[
            Tlv.c_string(TlvTag.RECEIPTED_MESSAGE_ID, "1a2b3c"),
            Tlv.u8(TlvTag.MESSAGE_STATE, MessageState.DELIVERED),
            Tlv.network_error_code(3, 0),
        ],
    )
    assert encode(pdu) == expected
    decoded = decode(expected)
    assert decoded == pdu
    assert isinstance(decoded, DeliverSm)
    assert is_delivery_receipt(decoded.esm_class)
    assert decoded.receipted_message_id == "1a2b3c"
    assert decoded.message_state is MessageState.DELIVERED
    assert decoded.network_error_code == (3, 0)
    assert decoded.message_payload is None
    receipt = parse_receipt_text(decoded.short_message.decode("ascii"))
    assert receipt is not None
    assert receipt.message_id == "1a2b3c"
    assert receipt.state is MessageState.DELIVERED


def test_enquire_link_vector() -> None:
    # Header only: command_length 16, command_id 0x00000015, status 0, sequence 7.
    expected = h("00000010 00000015 00000000 00000007")
    assert encode(EnquireLink(sequence_number=7)) == expected
    assert decode(expected) == EnquireLink(sequence_number=7)
    # enquire_link_resp and generic_nack carrying a status.
    assert encode(EnquireLinkResp(sequence_number=7)) == h("00000010 80000015 00000000 00000007")
    nack = GenericNack(sequence_number=5, command_status=S.ESME_RINVCMDID)
    assert encode(nack) == h("00000010 80000000 00000003 00000005")


def test_command_ids_and_statuses() -> None:
    assert CommandId.BIND_TRANSCEIVER_RESP == 0x80000000 | CommandId.BIND_TRANSCEIVER
    assert CommandId.DATA_SM == 0x103
    assert S.ESME_RTHROTTLED == 0x58
    assert S.ESME_RINVESMCLASS == 0x43
    assert S.ESME_RUNKNOWNERR == 0xFF
    assert S.ESME_RMSGQFUL == 0x14


# --------------------------------------------------------------------------- round trips


def c_str(max_len: int) -> st.SearchStrategy[str]:
    return st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=max_len - 1)


u8 = st.integers(0, 0xFF)
u32 = st.integers(0, 0xFFFFFFFF)
tlv_lists = st.lists(st.builds(Tlv, st.integers(0, 0xFFFF), st.binary(max_size=40)), max_size=4)
header = {"sequence_number": u32, "command_status": u32}


def bind_strategy(cls: type[Pdu]) -> st.SearchStrategy[Pdu]:
    return st.builds(
        cls,
        system_id=c_str(16),
        password=c_str(9),
        system_type=c_str(13),
        interface_version=u8,
        addr_ton=u8,
        addr_npi=u8,
        address_range=c_str(41),
        **header,
    )


def sm_strategy(cls: type[Pdu]) -> st.SearchStrategy[Pdu]:
    return st.builds(
        cls,
        service_type=c_str(6),
        source_addr_ton=u8,
        source_addr_npi=u8,
        source_addr=c_str(21),
        dest_addr_ton=u8,
        dest_addr_npi=u8,
        destination_addr=c_str(21),
        esm_class=u8,
        protocol_id=u8,
        priority_flag=u8,
        schedule_delivery_time=c_str(17),
        validity_period=c_str(17),
        registered_delivery=u8,
        replace_if_present_flag=u8,
        data_coding=u8,
        sm_default_msg_id=u8,
        short_message=st.binary(max_size=254),
        tlvs=tlv_lists,
        **header,
    )


ALL_PDUS: st.SearchStrategy[Pdu] = st.one_of(
    *[bind_strategy(c) for c in (BindTransmitter, BindReceiver, BindTransceiver)],
    *[
        st.builds(c, system_id=c_str(16), tlvs=tlv_lists, **header)
        for c in (BindTransmitterResp, BindReceiverResp, BindTransceiverResp)
    ],
    *[sm_strategy(c) for c in (SubmitSm, DeliverSm)],
    *[
        st.builds(c, message_id=c_str(65), tlvs=tlv_lists, **header)
        for c in (SubmitSmResp, DeliverSmResp, DataSmResp)
    ],
    st.builds(
        DataSm,
        service_type=c_str(6),
        source_addr_ton=u8,
        source_addr_npi=u8,
        source_addr=c_str(65),
        dest_addr_ton=u8,
        dest_addr_npi=u8,
        destination_addr=c_str(65),
        esm_class=u8,
        registered_delivery=u8,
        data_coding=u8,
        tlvs=tlv_lists,
        **header,
    ),
    *[
        st.builds(c, **header)
        for c in (EnquireLink, EnquireLinkResp, Unbind, UnbindResp, GenericNack)
    ],
)


@given(ALL_PDUS)
@settings(max_examples=400)
def test_round_trip_every_pdu_type(pdu: Pdu) -> None:
    frame = encode(pdu)
    assert int.from_bytes(frame[:4], "big") == len(frame)
    assert int.from_bytes(frame[4:8], "big") == pdu.command_id
    decoded = decode(frame)
    assert type(decoded) is type(pdu)
    assert decoded == pdu
    assert encode(decoded) == frame


@given(st.lists(ALL_PDUS, min_size=1, max_size=12), st.data())
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_reader_random_chunks(pdus: list[Pdu], data: st.DataObject) -> None:
    stream = b"".join(encode(p) for p in pdus)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=len(stream) // 4 + 3)))
    reader = PduReader()
    got: list[Pdu] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        got.extend(reader.feed(stream[start:cut]))
        start = cut
    assert got == pdus
    assert reader.buffered == 0


def test_reader_byte_by_byte_and_all_at_once() -> None:
    pdus: list[Pdu] = [
        EnquireLink(sequence_number=1),
        SubmitSm(sequence_number=2, destination_addr="123", short_message=b"hi"),
        SubmitSmResp(sequence_number=2, message_id="abc"),
    ]
    stream = b"".join(map(encode, pdus))
    reader = PduReader()
    got: list[Pdu] = []
    for i in range(len(stream)):
        got.extend(reader.feed(stream[i : i + 1]))
    assert got == pdus
    assert PduReader().feed(stream) == pdus


# --------------------------------------------------------------------------- fuzz


KNOWN_IDS = [int(c) for c in CommandId] + [0x3, 0x7, 0x80000003, 0x21]


def decode_or_error(frame: bytes) -> Pdu | PduError:
    """decode() must return a PDU or raise PduError from its own checks (never from the
    defensive catch-all, which would mean an unchecked length somewhere)."""
    try:
        return decode(frame)
    except PduError as exc:
        assert "internal decoding failure" not in str(exc)
        return exc


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_fuzz_decode_arbitrary_bytes(data: bytes) -> None:
    decode_or_error(data)


@given(st.sampled_from(KNOWN_IDS), u32, u32, st.binary(max_size=300))
@settings(max_examples=1500)
def test_fuzz_decode_valid_header_random_body(cid: int, status: int, seq: int, body: bytes) -> None:
    frame = (16 + len(body)).to_bytes(4, "big") + cid.to_bytes(4, "big")
    frame += status.to_bytes(4, "big") + seq.to_bytes(4, "big") + body
    result = decode_or_error(frame)
    if isinstance(result, PduError):
        exc = result
        assert exc.sequence_number == seq
        assert exc.command_id == cid
        assert isinstance(exc.command_status, int)
        assert str(exc)
    else:
        pdu = result
        assert pdu.sequence_number == seq
        # TLV accessors may reject bad sizes, but only with PduError.
        for name in (
            "receipted_message_id",
            "message_state",
            "network_error_code",
            "sar_msg_ref_num",
            "sar_total_segments",
            "sar_segment_seqnum",
            "user_message_reference",
            "sc_interface_version",
        ):
            try:
                getattr(pdu, name, None)
            except PduError as exc:
                assert exc.command_status == S.ESME_RINVPARLEN


@given(ALL_PDUS, st.data())
@settings(max_examples=300)
def test_fuzz_mutated_valid_pdus(pdu: Pdu, data: st.DataObject) -> None:
    frame = bytearray(encode(pdu))
    if len(frame) > 16:
        cut = data.draw(st.integers(16, len(frame)))
        del frame[cut:]
        for _ in range(data.draw(st.integers(0, 4))):
            index = data.draw(st.integers(16, len(frame) - 1)) if len(frame) > 16 else None
            if index is not None:
                frame[index] = data.draw(u8)
        frame[0:4] = len(frame).to_bytes(4, "big")
    decode_or_error(bytes(frame))


@given(st.lists(st.binary(max_size=64), max_size=20))
@settings(max_examples=300)
def test_fuzz_reader_never_raises_anything_else(chunks: list[bytes]) -> None:
    reader = PduReader(max_length=512)
    for chunk in chunks:
        data = chunk
        for _ in range(100):  # drain after non-fatal errors
            try:
                reader.feed(data)
                break
            except PduError as exc:
                assert "internal decoding failure" not in str(exc)
                if exc.fatal:
                    with pytest.raises(PduError):
                        reader.feed(b"")
                    return
                data = b""
        assert reader.buffered <= 512 + 64


random_frames = st.builds(
    lambda cid, seq, body: (
        (16 + len(body)).to_bytes(4, "big")
        + cid.to_bytes(4, "big")
        + bytes(4)
        + seq.to_bytes(4, "big")
        + body
    ),
    st.sampled_from(KNOWN_IDS),
    u32,
    st.binary(max_size=80),
)


@given(st.lists(random_frames | ALL_PDUS.map(encode), max_size=15), st.data())
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_reader_matches_decode_frame_by_frame(frames: list[bytes], data: st.DataObject) -> None:
    """With well-framed input the reader yields exactly what decode() gives per frame:
    bad bodies are skipped with a non-fatal PduError and the stream continues."""
    expected = [decode_or_error(f) for f in frames]
    stream = b"".join(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    reader = PduReader()
    got: list[object] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        chunk = stream[start:cut]
        start = cut
        while True:
            try:
                got.extend(reader.feed(chunk))
                break
            except PduError as exc:
                assert not exc.fatal
                got.extend(exc.preceding)
                got.append(exc)
                chunk = b""
    assert reader.buffered == 0
    assert len(got) == len(expected)
    for item, want in zip(got, expected, strict=True):
        if isinstance(want, PduError):
            assert isinstance(item, PduError)
            assert (item.command_status, item.sequence_number, str(item)) == (
                want.command_status,
                want.sequence_number,
                str(want),
            )
        else:
            assert item == want


# --------------------------------------------------------------------------- malformed


def frame_of(cid: int, body: bytes, seq: int = 42, status: int = 0) -> bytes:
    return (
        (16 + len(body)).to_bytes(4, "big")
        + cid.to_bytes(4, "big")
        + status.to_bytes(4, "big")
        + seq.to_bytes(4, "big")
        + body
    )


def decode_error(frame: bytes) -> PduError:
    with pytest.raises(PduError) as info:
        decode(frame)
    return info.value


def test_command_length_below_header() -> None:
    bad = h("00000008 00000015 00000000 00000001")
    assert decode_error(bad).command_status == S.ESME_RINVCMDLEN
    assert decode_error(b"\x00\x00\x00").command_status == S.ESME_RINVCMDLEN
    reader = PduReader()
    with pytest.raises(PduError) as info:
        reader.feed(bad[:4])
    assert info.value.command_status == S.ESME_RINVCMDLEN
    assert info.value.fatal
    with pytest.raises(PduError) as again:
        reader.feed(encode(EnquireLink(sequence_number=1)))
    assert again.value.fatal


def test_command_length_over_cap() -> None:
    huge = h("ffffffff 00000004 00000000 0000002a")
    error = decode_error(huge)
    assert error.command_status == S.ESME_RINVCMDLEN
    reader = PduReader(max_length=1024)
    with pytest.raises(PduError) as info:
        reader.feed(huge)  # raises at once: nothing is reserved for 4 GiB
    assert info.value.command_status == S.ESME_RINVCMDLEN
    assert info.value.sequence_number == 0x2A
    assert info.value.fatal
    assert reader.buffered == 0
    # The cap is configurable.
    pdu = SubmitSm(sequence_number=1, short_message=b"x" * 200)
    with pytest.raises(PduError):
        PduReader(max_length=100).feed(encode(pdu))
    assert PduReader(max_length=300).feed(encode(pdu)) == [pdu]
    with pytest.raises(PduError):
        decode(encode(pdu), max_length=100)


def test_command_length_mismatch_in_decode() -> None:
    frame = encode(EnquireLink(sequence_number=3))
    assert decode_error(frame + b"\x00").command_status == S.ESME_RINVCMDLEN
    assert decode_error(frame[:15]).command_status == S.ESME_RINVCMDLEN


def test_unknown_command_id_keeps_sequence_and_reader_continues() -> None:
    query_sm = frame_of(0x00000003, b"abc\x00\x00\x00\x00", seq=77)
    error = decode_error(query_sm)
    assert error.command_status == S.ESME_RINVCMDID
    assert error.sequence_number == 77
    assert error.command_id == 3
    assert not error.fatal

    first = EnquireLink(sequence_number=1)
    last = Unbind(sequence_number=2)
    reader = PduReader()
    with pytest.raises(PduError) as info:
        reader.feed(encode(first) + query_sm + encode(last))
    assert info.value.preceding == [first]
    assert info.value.sequence_number == 77
    assert reader.feed(b"") == [last]
    answer = GenericNack(
        sequence_number=info.value.sequence_number or 0,
        command_status=info.value.command_status,
    )
    assert encode(answer) == h("00000010 80000000 00000003 0000004d")


def bind_body(system_id: bytes = b"sys\x00", password: bytes = b"pw\x00") -> bytes:
    return system_id + password + b"\x00" + b"\x34\x00\x00" + b"\x00"


def test_c_string_without_nul() -> None:
    error = decode_error(frame_of(CommandId.BIND_TRANSMITTER, b"abc"))
    assert error.command_status == S.ESME_RINVSYSID
    assert "NUL" in str(error)
    assert error.sequence_number == 42
    error = decode_error(frame_of(CommandId.BIND_TRANSMITTER, b"abc\x00pass"))
    assert error.command_status == S.ESME_RINVPASWD


def test_c_string_over_max_length() -> None:
    # system_id max 16 octets including the NUL: 15 characters fit, 16 do not.
    ok = frame_of(CommandId.BIND_TRANSMITTER, bind_body(b"a" * 15 + b"\x00"))
    assert isinstance(decode(ok), BindTransmitter)
    error = decode_error(frame_of(CommandId.BIND_TRANSMITTER, bind_body(b"a" * 16 + b"\x00")))
    assert error.command_status == S.ESME_RINVSYSID
    assert "maximum" in str(error)
    # password max 9 with NUL.
    error = decode_error(frame_of(CommandId.BIND_TRANSMITTER, bind_body(password=b"p" * 9 + b"\0")))
    assert error.command_status == S.ESME_RINVPASWD

    def sm_body(source: bytes, dest: bytes) -> bytes:
        # esm_class..sm_default_msg_id (8 octets incl. two empty C-strings) + sm_length 0
        return b"\x00" + b"\x01\x01" + source + b"\x01\x01" + dest + bytes(10)

    good = frame_of(CommandId.SUBMIT_SM, sm_body(b"1" * 20 + b"\0", b"2" * 20 + b"\0"))
    assert isinstance(decode(good), SubmitSm)
    bad_src = frame_of(CommandId.SUBMIT_SM, sm_body(b"1" * 21 + b"\0", b"2\0"))
    assert decode_error(bad_src).command_status == S.ESME_RINVSRCADR
    bad_dst = frame_of(CommandId.SUBMIT_SM, sm_body(b"1\0", b"2" * 21 + b"\0"))
    assert decode_error(bad_dst).command_status == S.ESME_RINVDSTADR
    bad_msgid = frame_of(CommandId.SUBMIT_SM_RESP, b"m" * 65 + b"\0")
    assert decode_error(bad_msgid).command_status == S.ESME_RINVMSGID


def submit_frame(sm_length: int, message: bytes, tail: bytes = b"") -> bytes:
    pdu = SubmitSm(sequence_number=9, destination_addr="123", short_message=b"")
    body = encode(pdu)[16:-1]  # drop the header and the zero sm_length
    return frame_of(CommandId.SUBMIT_SM, body + bytes([sm_length]) + message + tail, seq=9)


def test_sm_length_beyond_body() -> None:
    assert isinstance(decode(submit_frame(3, b"abc")), SubmitSm)
    error = decode_error(submit_frame(10, b"abc"))
    assert error.command_status == S.ESME_RINVMSGLEN
    assert error.sequence_number == 9
    assert decode_error(submit_frame(255, b"a" * 255)).command_status == S.ESME_RINVMSGLEN


def test_truncated_body_before_fixed_field() -> None:
    body = b"\x00\x01\x01src\x00\x01"  # stops inside the destination part
    error = decode_error(frame_of(CommandId.SUBMIT_SM, body))
    assert error.command_status in (S.ESME_RINVCMDLEN, S.ESME_RINVDSTADR)
    body = b"\x00\x01\x01src\x00\x01\x01dst\x00\x00"  # ends before protocol_id
    assert decode_error(frame_of(CommandId.SUBMIT_SM, body)).command_status == S.ESME_RINVCMDLEN


def test_truncated_tlv() -> None:
    declared_too_long = submit_frame(0, b"", h("0424 000a 0102"))
    error = decode_error(declared_too_long)
    assert error.command_status == S.ESME_RINVOPTPARSTREAM
    short_header = submit_frame(0, b"", h("0424 00"))
    assert decode_error(short_header).command_status == S.ESME_RINVOPTPARSTREAM
    ok = decode(submit_frame(0, b"", h("0424 0002 0102")))
    assert isinstance(ok, SubmitSm)
    assert ok.message_payload == b"\x01\x02"


def test_trailing_garbage() -> None:
    error = decode_error(frame_of(CommandId.ENQUIRE_LINK, b"\x00"))
    assert error.command_status == S.ESME_RINVCMDLEN
    error = decode_error(frame_of(CommandId.BIND_TRANSCEIVER, bind_body() + b"xy"))
    assert error.command_status == S.ESME_RINVCMDLEN
    error = decode_error(frame_of(CommandId.SUBMIT_SM_RESP, b"id\x00zz"))
    assert error.command_status == S.ESME_RINVOPTPARSTREAM


def test_body_less_responses_accepted() -> None:
    for cid, cls in (
        (CommandId.SUBMIT_SM_RESP, SubmitSmResp),
        (CommandId.DELIVER_SM_RESP, DeliverSmResp),
        (CommandId.BIND_TRANSMITTER_RESP, BindTransmitterResp),
    ):
        pdu = decode(frame_of(cid, b"", status=S.ESME_RTHROTTLED))
        assert type(pdu) is cls
        assert pdu.command_status == S.ESME_RTHROTTLED
        assert pdu.sequence_number == 42


def test_tlv_accessor_rejects_wrong_size() -> None:
    pdu = DeliverSm(tlvs=[Tlv(TlvTag.MESSAGE_STATE, b"\x02\x00")])
    with pytest.raises(PduError) as info:
        _ = pdu.message_state
    assert info.value.command_status == S.ESME_RINVPARLEN
    unknown = DeliverSm(tlvs=[Tlv(TlvTag.MESSAGE_STATE, b"\x63")])
    assert unknown.message_state == 0x63
    sar = SubmitSm(
        tlvs=[
            Tlv.u16(TlvTag.SAR_MSG_REF_NUM, 0x1234),
            Tlv.u8(TlvTag.SAR_TOTAL_SEGMENTS, 3),
            Tlv.u8(TlvTag.SAR_SEGMENT_SEQNUM, 2),
            Tlv.u16(TlvTag.USER_MESSAGE_REFERENCE, 7),
        ]
    )
    assert (sar.sar_msg_ref_num, sar.sar_total_segments, sar.sar_segment_seqnum) == (0x1234, 3, 2)
    assert sar.user_message_reference == 7


def test_unknown_tlvs_preserved_in_order() -> None:
    tlvs = [Tlv(0x1403, b"vendor"), Tlv(0x0424, b"x"), Tlv(0x1403, b"again")]
    pdu = SubmitSm(sequence_number=1, tlvs=tlvs)
    decoded = decode(encode(pdu))
    assert isinstance(decoded, SubmitSm)
    assert decoded.tlvs == tlvs
    assert decoded.get_tlv(0x1403) == b"vendor"


@pytest.mark.parametrize(
    ("pdu", "status"),
    [
        (SubmitSm(source_addr="1" * 21), S.ESME_RINVSRCADR),
        (SubmitSm(destination_addr="1" * 21), S.ESME_RINVDSTADR),
        (SubmitSm(short_message=b"x" * 255), S.ESME_RINVMSGLEN),
        (SubmitSm(esm_class=256), S.ESME_RINVESMCLASS),
        (SubmitSm(source_addr="a\x00b"), S.ESME_RINVSRCADR),
        (SubmitSm(source_addr="汉"), S.ESME_RINVSRCADR),
        (BindTransmitter(system_id="s" * 16), S.ESME_RINVSYSID),
        (BindTransmitter(password="p" * 9), S.ESME_RINVPASWD),
        (EnquireLink(sequence_number=-1), S.ESME_RSYSERR),
    ],
)
def test_encode_rejects_invalid_fields(pdu: Pdu, status: int) -> None:
    with pytest.raises(PduError) as info:
        encode(pdu)
    assert info.value.command_status == status


# --------------------------------------------------------------------------- receipts


def test_receipt_standard() -> None:
    receipt = parse_receipt_text(
        "id:0123456789 sub:001 dlvrd:001 submit date:2401021530 done date:2401021531 "
        "stat:DELIVRD err:000 text:Hello world"
    )
    assert receipt == Receipt(
        message_id="0123456789",
        submitted=1,
        delivered=1,
        submit_date=datetime(2024, 1, 2, 15, 30),
        done_date=datetime(2024, 1, 2, 15, 31),
        stat="DELIVRD",
        err="000",
        text="Hello world",
    )
    assert receipt.state is MessageState.DELIVERED


def test_receipt_upper_case_extra_spaces_seconds() -> None:
    receipt = parse_receipt_text(
        "ID: 7F3A09  SUB:001  DLVRD:000 SUBMIT  DATE:240102153012 DONE DATE: 240102153145 "
        "STAT:UNDELIV ERR:034 TEXT: Ihr Code"
    )
    assert receipt is not None
    assert receipt.message_id == "7F3A09"
    assert receipt.delivered == 0
    assert receipt.submit_date == datetime(2024, 1, 2, 15, 30, 12)
    assert receipt.done_date == datetime(2024, 1, 2, 15, 31, 45)
    assert receipt.stat == "UNDELIV"
    assert receipt.state is MessageState.UNDELIVERABLE
    assert receipt.err == "034"
    assert receipt.text == "Ihr Code"


def test_receipt_missing_fields_and_variants() -> None:
    receipt = parse_receipt_text("id:abc-123 stat:EXPIRED err:0")
    assert receipt == Receipt(message_id="abc-123", stat="EXPIRED", err="0")
    receipt = parse_receipt_text("id:55 submit_date:2401021530 done_date:2401021531 stat:delivered")
    assert receipt is not None
    assert receipt.stat == "DELIVRD"
    assert receipt.submit_date == datetime(2024, 1, 2, 15, 30)
    assert receipt.submitted is None
    # Text may itself look like receipt fields; everything after "text:" is text.
    receipt = parse_receipt_text("id:1 stat:DELIVRD err:000 text:my id:2 stat:REJECTD")
    assert receipt is not None
    assert (receipt.message_id, receipt.stat) == ("1", "DELIVRD")
    assert receipt.text == "my id:2 stat:REJECTD"
    # Impossible dates are dropped, not raised.
    receipt = parse_receipt_text("id:9 submit date:2413991530 done date:abc stat:ACCEPTD")
    assert receipt is not None
    assert receipt.submit_date is None
    assert receipt.done_date is None
    assert receipt.state is MessageState.ACCEPTED
    # Unknown stat words are kept.
    receipt = parse_receipt_text("id:9 stat:FAILED")
    assert receipt is not None
    assert receipt.stat == "FAILED"
    assert receipt.state is None


@pytest.mark.parametrize("text", ["", "hello world", "id:5", "stat:DELIVRD err:000", "paid:5 x"])
def test_receipt_rejects_non_receipts(text: str) -> None:
    assert parse_receipt_text(text) is None


def test_stat_state_mapping() -> None:
    pairs = {
        "ENROUTE": MessageState.ENROUTE,
        "DELIVRD": MessageState.DELIVERED,
        "EXPIRED": MessageState.EXPIRED,
        "DELETED": MessageState.DELETED,
        "UNDELIV": MessageState.UNDELIVERABLE,
        "ACCEPTD": MessageState.ACCEPTED,
        "UNKNOWN": MessageState.UNKNOWN,
        "REJECTD": MessageState.REJECTED,
    }
    for stat, state in pairs.items():
        assert stat_to_state(stat) is state
        assert stat_to_state(stat.lower()) is state
        assert state_to_stat(state) == stat
    assert [int(s) for s in MessageState] == list(range(1, 9))
    assert state_to_stat(99) == "UNKNOWN"


dates = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)).map(
    lambda d: d.replace(microsecond=0)
)


@given(
    message_id=st.text("0123456789abcdefABCDEF-", min_size=1, max_size=30),
    submitted=st.none() | st.integers(0, 999),
    delivered=st.none() | st.integers(0, 999),
    submit_date=st.none() | dates,
    done_date=st.none() | dates,
    stat=st.sampled_from(["DELIVRD", "EXPIRED", "DELETED", "UNDELIV", "ACCEPTD", "UNKNOWN"]),
    err=st.text("0123456789", max_size=3),
    text=st.text(st.characters(exclude_categories=["Cs"]), max_size=30),
    seconds=st.booleans(),
)
def test_receipt_round_trip(
    message_id: str,
    submitted: int | None,
    delivered: int | None,
    submit_date: datetime | None,
    done_date: datetime | None,
    stat: str,
    err: str,
    text: str,
    seconds: bool,
) -> None:
    assume(text == text.strip())
    if not seconds:
        submit_date = submit_date and submit_date.replace(second=0)
        done_date = done_date and done_date.replace(second=0)
    receipt = Receipt(
        message_id=message_id,
        submitted=submitted,
        delivered=delivered,
        submit_date=submit_date,
        done_date=done_date,
        stat=stat,
        err=err,
        text=text,
    )
    assert parse_receipt_text(format_receipt_text(receipt, seconds=seconds)) == receipt


def test_format_receipt_text_layout() -> None:
    receipt = Receipt(
        message_id="7b",
        submitted=1,
        delivered=1,
        submit_date=datetime(2024, 1, 2, 15, 30),
        done_date=datetime(2024, 1, 2, 15, 31, 5),
        stat="DELIVRD",
        err="000",
        text="Hi",
    )
    assert format_receipt_text(receipt) == (
        "id:7b sub:001 dlvrd:001 submit date:2401021530 done date:2401021531 "
        "stat:DELIVRD err:000 text:Hi"
    )


# --------------------------------------------------------------------------- message ids


def test_normalise_message_id() -> None:
    assert normalise_message_id("7B", "hex") == "7b"
    assert normalise_message_id("123", "decimal") == "7b"
    assert normalise_message_id("0000007b", "hex") == "7b"
    assert normalise_message_id("000123", "decimal") == "7b"
    assert normalise_message_id("0", "decimal") == "0"
    assert normalise_message_id("000", "hex") == "0"
    assert normalise_message_id("abc-123", "hex") == "abc-123"
    assert normalise_message_id("ABC", "decimal") == "ABC"
    assert normalise_message_id("007B", "verbatim") == "007B"
    assert normalise_message_id("", "hex") == ""
    assert normalise_message_id(" 123 ", "decimal") == "7b"


@given(st.integers(0, 2**80), st.integers(0, 5))
def test_normalise_hex_decimal_equivalence(value: int, zeros: int) -> None:
    as_hex = "0" * zeros + format(value, "X")
    as_dec = "0" * zeros + str(value)
    assert normalise_message_id(as_hex, "hex") == normalise_message_id(as_dec, "decimal")
    assert normalise_message_id(as_hex.lower(), "hex") == format(value, "x")


# --------------------------------------------------------------------------- UDH


@given(st.integers(0, 255), st.integers(1, 255), st.data(), st.binary(max_size=140))
def test_udh_round_trip_8bit(ref: int, total: int, data: st.DataObject, payload: bytes) -> None:
    seq = data.draw(st.integers(1, total))
    udh = udh_concat(ref, total, seq)
    assert udh == bytes([5, 0, 3, ref, total, seq])
    assert split_udh(udh + payload) == (ConcatInfo(ref, total, seq, 8), payload)


@given(st.integers(0, 0xFFFF), st.integers(1, 255), st.data(), st.binary(max_size=140))
def test_udh_round_trip_16bit(ref: int, total: int, data: st.DataObject, payload: bytes) -> None:
    seq = data.draw(st.integers(1, total))
    assert split_udh(udh_concat16(ref, total, seq) + payload) == (
        ConcatInfo(ref, total, seq, 16),
        payload,
    )


def test_udh_16bit_vector_and_other_ies() -> None:
    assert split_udh(h("06 08 04 12 34 03 02") + b"abc") == (ConcatInfo(0x1234, 3, 2, 16), b"abc")
    # Port addressing IE (0x05, 4 octets) before the concat IE.
    message = h("0b 05 04 0b84 23f0 00 03 7f 02 02") + b"zz"
    assert split_udh(message) == (ConcatInfo(0x7F, 2, 2, 8), b"zz")
    # A UDH without concatenation, and an invalid concat IE (seq 0), give no info.
    assert split_udh(h("04 05 02 0b84") + b"p") == (None, b"p")
    assert split_udh(h("05 00 03 01 02 00") + b"p") == (None, b"p")


@pytest.mark.parametrize("message", [b"", h("05 00 03 01"), h("03 00 03 01"), h("01 00")])
def test_udh_malformed(message: bytes) -> None:
    with pytest.raises(PduError) as info:
        split_udh(message)
    assert info.value.command_status == S.ESME_RINVESMCLASS


@pytest.mark.parametrize(("ref", "total", "seq"), [(256, 2, 1), (1, 0, 1), (1, 2, 3), (1, 2, 0)])
def test_udh_concat_rejects_bad_arguments(ref: int, total: int, seq: int) -> None:
    with pytest.raises(ValueError):
        udh_concat(ref, total, seq)


# --------------------------------------------------------------------------- fast paths


@given(
    message_id=st.text("0123456789abcdefABCDEFxyz-_:", min_size=1, max_size=70),
    counts=st.tuples(st.integers(0, 999), st.integers(0, 999)),
    dates=st.tuples(dates, dates),
    stat=st.sampled_from(["DELIVRD", "UNDELIV", "EXPIRED", "REJECTD", "ENROUTE", "delivrd"]),
    err=st.text("0123456789abcZ:", max_size=9),
    text=st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
    | st.sampled_from([" id:9 stat:UNDELIV", "err:1", " text: again", "stat:DELIVRD\n"]),
    seconds=st.booleans(),
)
def test_receipt_fast_path_agrees_with_the_general_parser(
    message_id: str,
    counts: tuple[int, int],
    dates: tuple[datetime, datetime],
    stat: str,
    err: str,
    text: str,
    seconds: bool,
) -> None:
    """The one-match parser for the usual layout reads every text as the general one does."""
    fmt = "%y%m%d%H%M%S" if seconds else "%y%m%d%H%M"
    raw = (
        f"id:{message_id} sub:{counts[0]:03d} dlvrd:{counts[1]:03d}"
        f" submit date:{dates[0].strftime(fmt)} done date:{dates[1].strftime(fmt)}"
        f" stat:{stat} err:{err} text:{text}"
    )
    assert parse_receipt_text(raw) == parse_receipt_fields(raw)


@given(ALL_PDUS)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_short_message_fast_paths_agree_with_the_checked_ones(pdu: Pdu) -> None:
    """submit_sm and deliver_sm: the fast encoder writes the checked encoder's bytes, and the
    fast decoder reads what the checked decoder reads."""
    if not isinstance(pdu, SubmitSm | DeliverSm):
        return
    body = pdu._encode_checked()
    assert pdu.encode_body() == body
    reader = BodyReader(body, pdu.command_id, pdu.sequence_number)
    checked = type(pdu)._decode_checked(reader, pdu.command_status)
    assert type(pdu)._decode_fast(body, pdu.sequence_number, pdu.command_status) == checked


@given(st.binary(max_size=200))
def test_short_message_fast_decoder_declines_what_the_checked_one_refuses(body: bytes) -> None:
    for cls in (SubmitSm, DeliverSm):
        try:
            checked = cls._decode_checked(BodyReader(body, cls.command_id, 1), 0)
        except PduError:
            checked = None
        try:
            fast = cls._decode_fast(body, 1, 0)
        except Exception:
            fast = None
        if fast is not None:
            assert fast == checked
