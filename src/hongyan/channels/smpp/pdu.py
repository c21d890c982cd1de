"""SMPP 3.4 PDU codec: pure Python, no I/O.

Wire format (SMPP v3.4, section 3.2): every PDU starts with a 16-octet header of four
big-endian unsigned 32-bit integers -- ``command_length`` (the whole PDU, header
included), ``command_id``, ``command_status`` and ``sequence_number`` -- followed by the
mandatory body fields of the command and, for some commands, optional parameters (TLVs:
2-octet tag, 2-octet length, value).

Public API:

* :func:`encode` / :func:`decode` for one whole PDU, :class:`PduReader` for a byte stream.
* One dataclass per PDU (:class:`SubmitSm`, :class:`DeliverSm`, :class:`BindTransmitter`,
  ...); every one carries ``sequence_number`` and ``command_status``.
* :class:`PduError` for every malformed input; it carries the ``command_status`` to answer
  with and, when known, the ``sequence_number`` and ``command_id`` of the offending PDU.
* Delivery receipts: :func:`parse_receipt_text`, :func:`format_receipt_text`,
  :class:`Receipt`, :class:`MessageState`.
* :func:`normalise_message_id` for carriers that report an id in hex in ``submit_sm_resp``
  and in decimal in the receipt (or the other way round).
* UDH concatenation: :func:`udh_concat`, :func:`udh_concat16`, :func:`split_udh`.

C-octet strings are decoded and encoded as Latin-1 so that every octet survives a round
trip; the specification only allows ASCII, but carriers do not always comply.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import ClassVar, Literal, Self

__all__ = [
    "DEFAULT_MAX_PDU_LENGTH",
    "HEADER_LENGTH",
    "SM_MAX_LENGTH",
    "Bind",
    "BindReceiver",
    "BindReceiverResp",
    "BindResp",
    "BindTransceiver",
    "BindTransceiverResp",
    "BindTransmitter",
    "BindTransmitterResp",
    "CommandId",
    "CommandStatus",
    "ConcatInfo",
    "DataCoding",
    "DataSm",
    "DataSmResp",
    "DeliverSm",
    "DeliverSmResp",
    "EnquireLink",
    "EnquireLinkResp",
    "EsmClass",
    "GenericNack",
    "MessageState",
    "Pdu",
    "PduError",
    "PduReader",
    "Receipt",
    "ShortMessagePdu",
    "SubmitSm",
    "SubmitSmResp",
    "Tlv",
    "TlvTag",
    "Unbind",
    "UnbindResp",
    "decode",
    "encode",
    "format_receipt_text",
    "is_delivery_receipt",
    "normalise_message_id",
    "parse_receipt_text",
    "split_udh",
    "stat_to_state",
    "state_to_stat",
    "udh_concat",
    "udh_concat16",
]

HEADER_LENGTH = 16
DEFAULT_MAX_PDU_LENGTH = 64 * 1024
SM_MAX_LENGTH = 254
INTERFACE_VERSION_34 = 0x34
_RESP_BIT = 0x80000000


# --------------------------------------------------------------------------- constants


class CommandId(IntEnum):
    """command_id values (SMPP 3.4 section 5.1.2.1) for the commands this codec handles."""

    GENERIC_NACK = 0x80000000
    BIND_RECEIVER = 0x00000001
    BIND_RECEIVER_RESP = 0x80000001
    BIND_TRANSMITTER = 0x00000002
    BIND_TRANSMITTER_RESP = 0x80000002
    SUBMIT_SM = 0x00000004
    SUBMIT_SM_RESP = 0x80000004
    DELIVER_SM = 0x00000005
    DELIVER_SM_RESP = 0x80000005
    UNBIND = 0x00000006
    UNBIND_RESP = 0x80000006
    BIND_TRANSCEIVER = 0x00000009
    BIND_TRANSCEIVER_RESP = 0x80000009
    ENQUIRE_LINK = 0x00000015
    ENQUIRE_LINK_RESP = 0x80000015
    DATA_SM = 0x00000103
    DATA_SM_RESP = 0x80000103


class CommandStatus(IntEnum):
    """command_status / error codes (SMPP 3.4 section 5.1.3).

    ``ESME_RINVDCS`` (0x104) is an SMPP 5.0 addition, included because gateways answer
    with it; everything else is from 3.4. Carriers also use vendor codes 0x400-0x4FF, so
    decoded PDUs keep ``command_status`` as a plain ``int``.
    """

    ESME_ROK = 0x00000000
    ESME_RINVMSGLEN = 0x00000001
    ESME_RINVCMDLEN = 0x00000002
    ESME_RINVCMDID = 0x00000003
    ESME_RINVBNDSTS = 0x00000004
    ESME_RALYBND = 0x00000005
    ESME_RINVPRTFLG = 0x00000006
    ESME_RINVREGDLVFLG = 0x00000007
    ESME_RSYSERR = 0x00000008
    ESME_RINVSRCADR = 0x0000000A
    ESME_RINVDSTADR = 0x0000000B
    ESME_RINVMSGID = 0x0000000C
    ESME_RBINDFAIL = 0x0000000D
    ESME_RINVPASWD = 0x0000000E
    ESME_RINVSYSID = 0x0000000F
    ESME_RCANCELFAIL = 0x00000011
    ESME_RREPLACEFAIL = 0x00000013
    ESME_RMSGQFUL = 0x00000014
    ESME_RINVSERTYP = 0x00000015
    ESME_RINVNUMDESTS = 0x00000033
    ESME_RINVDLNAME = 0x00000034
    ESME_RINVDESTFLAG = 0x00000040
    ESME_RINVSUBREP = 0x00000042
    ESME_RINVESMCLASS = 0x00000043
    ESME_RCNTSUBDL = 0x00000044
    ESME_RSUBMITFAIL = 0x00000045
    ESME_RINVSRCTON = 0x00000048
    ESME_RINVSRCNPI = 0x00000049
    ESME_RINVDSTTON = 0x00000050
    ESME_RINVDSTNPI = 0x00000051
    ESME_RINVSYSTYP = 0x00000053
    ESME_RINVREPFLAG = 0x00000054
    ESME_RINVNUMMSGS = 0x00000055
    ESME_RTHROTTLED = 0x00000058
    ESME_RINVSCHED = 0x00000061
    ESME_RINVEXPIRY = 0x00000062
    ESME_RINVDFTMSGID = 0x00000063
    ESME_RX_T_APPN = 0x00000064
    ESME_RX_P_APPN = 0x00000065
    ESME_RX_R_APPN = 0x00000066
    ESME_RQUERYFAIL = 0x00000067
    ESME_RINVOPTPARSTREAM = 0x000000C0
    ESME_ROPTPARNOTALLWD = 0x000000C1
    ESME_RINVPARLEN = 0x000000C2
    ESME_RMISSINGOPTPARAM = 0x000000C3
    ESME_RINVOPTPARAMVAL = 0x000000C4
    ESME_RDELIVERYFAILURE = 0x000000FE
    ESME_RUNKNOWNERR = 0x000000FF
    ESME_RINVDCS = 0x00000104  # SMPP 5.0


class TlvTag(IntEnum):
    """Optional parameter tags (SMPP 3.4 section 5.3.2) used by a gateway."""

    RECEIPTED_MESSAGE_ID = 0x001E  # C-octet string, max 65
    USER_MESSAGE_REFERENCE = 0x0204  # 2 octets
    SAR_MSG_REF_NUM = 0x020C  # 2 octets
    SAR_TOTAL_SEGMENTS = 0x020E  # 1 octet
    SAR_SEGMENT_SEQNUM = 0x020F  # 1 octet
    SC_INTERFACE_VERSION = 0x0210  # 1 octet
    NETWORK_ERROR_CODE = 0x0423  # 3 octets: network type (1) + error code (2)
    MESSAGE_PAYLOAD = 0x0424  # octet string
    MESSAGE_STATE = 0x0427  # 1 octet


class MessageState(IntEnum):
    """message_state values (SMPP 3.4 section 5.2.28)."""

    ENROUTE = 1
    DELIVERED = 2
    EXPIRED = 3
    DELETED = 4
    UNDELIVERABLE = 5
    ACCEPTED = 6
    UNKNOWN = 7
    REJECTED = 8


class DataCoding(IntEnum):
    """Common data_coding values (SMPP 3.4 section 5.2.19)."""

    SMSC_DEFAULT = 0x00
    IA5 = 0x01
    OCTET_UNSPECIFIED = 0x02
    LATIN1 = 0x03
    OCTET_UNSPECIFIED_2 = 0x04
    JIS = 0x05
    CYRILLIC = 0x06
    LATIN_HEBREW = 0x07
    UCS2 = 0x08


class EsmClass:
    """esm_class bit masks (SMPP 3.4 section 5.2.12)."""

    MESSAGING_MODE_MASK = 0x03
    MESSAGE_TYPE_MASK = 0x3C
    MC_DELIVERY_RECEIPT = 0x04
    INTERMEDIATE_NOTIFICATION = 0x20
    UDHI = 0x40
    REPLY_PATH = 0x80


def is_delivery_receipt(esm_class: int) -> bool:
    """True when esm_class marks a deliver_sm as an SMSC delivery receipt."""
    return (esm_class & EsmClass.MESSAGE_TYPE_MASK) == EsmClass.MC_DELIVERY_RECEIPT


# --------------------------------------------------------------------------- errors


class PduError(Exception):
    """A PDU could not be encoded or decoded.

    ``command_status`` is the status to answer with (in the matching response, or in a
    ``generic_nack`` when the command is unknown or the frame is unusable).
    ``sequence_number`` and ``command_id`` are those of the offending PDU when the header
    could be read, else ``None``. ``fatal`` means the byte stream has lost its framing
    (bad command_length): the connection should be closed. ``preceding`` holds the PDUs a
    :class:`PduReader` decoded in the same ``feed`` call before the bad one; handle them
    first.
    """

    def __init__(
        self,
        message: str,
        command_status: int = CommandStatus.ESME_RSYSERR,
        sequence_number: int | None = None,
        *,
        command_id: int | None = None,
        fatal: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.command_status = command_status
        self.sequence_number = sequence_number
        self.command_id = command_id
        self.fatal = fatal
        self.preceding: list[Pdu] = []

    def __repr__(self) -> str:
        return (
            f"PduError({self.message!r}, command_status=0x{int(self.command_status):08X}, "
            f"sequence_number={self.sequence_number!r})"
        )


# --------------------------------------------------------------------------- TLVs


@dataclass(frozen=True)
class Tlv:
    """One optional parameter; unknown tags are preserved verbatim and in order."""

    tag: int
    value: bytes = b""

    @classmethod
    def u8(cls, tag: int, value: int) -> Tlv:
        return cls(tag, _int_bytes(value, 1, f"TLV 0x{tag:04X}"))

    @classmethod
    def u16(cls, tag: int, value: int) -> Tlv:
        return cls(tag, _int_bytes(value, 2, f"TLV 0x{tag:04X}"))

    @classmethod
    def c_string(cls, tag: int, value: str) -> Tlv:
        return cls(tag, _encode_c_string(value, 0x10000, f"TLV 0x{tag:04X}", None))

    @classmethod
    def network_error_code(cls, network_type: int, error_code: int) -> Tlv:
        """network_error_code: network type (1=ANSI-136, 2=IS-95, 3=GSM, ...) + code."""
        return cls(
            TlvTag.NETWORK_ERROR_CODE,
            _int_bytes(network_type, 1, "network type") + _int_bytes(error_code, 2, "error"),
        )


class _TlvAccess:
    """Typed accessors over ``self.tlvs``; a wrongly sized known TLV raises PduError."""

    tlvs: list[Tlv]
    sequence_number: int

    def get_tlv(self, tag: int) -> bytes | None:
        """Value of the first TLV with ``tag``, or None."""
        for tlv in self.tlvs:
            if tlv.tag == tag:
                return tlv.value
        return None

    def _tlv_int(self, tag: int, size: int) -> int | None:
        value = self.get_tlv(tag)
        if value is None:
            return None
        if len(value) != size:
            raise PduError(
                f"TLV 0x{tag:04X} must be {size} octet(s), got {len(value)}",
                CommandStatus.ESME_RINVPARLEN,
                self.sequence_number,
            )
        return int.from_bytes(value, "big")

    @property
    def receipted_message_id(self) -> str | None:
        value = self.get_tlv(TlvTag.RECEIPTED_MESSAGE_ID)
        if value is None:
            return None
        return value.split(b"\x00", 1)[0].decode("latin-1")

    @property
    def message_state(self) -> int | None:
        """MessageState when the value is known, the raw int otherwise, None if absent."""
        value = self._tlv_int(TlvTag.MESSAGE_STATE, 1)
        if value is None:
            return None
        try:
            return MessageState(value)
        except ValueError:
            return value

    @property
    def network_error_code(self) -> tuple[int, int] | None:
        """(network_type, error_code) or None."""
        value = self._tlv_int(TlvTag.NETWORK_ERROR_CODE, 3)
        if value is None:
            return None
        return value >> 16, value & 0xFFFF

    @property
    def message_payload(self) -> bytes | None:
        return self.get_tlv(TlvTag.MESSAGE_PAYLOAD)

    @property
    def sar_msg_ref_num(self) -> int | None:
        return self._tlv_int(TlvTag.SAR_MSG_REF_NUM, 2)

    @property
    def sar_total_segments(self) -> int | None:
        return self._tlv_int(TlvTag.SAR_TOTAL_SEGMENTS, 1)

    @property
    def sar_segment_seqnum(self) -> int | None:
        return self._tlv_int(TlvTag.SAR_SEGMENT_SEQNUM, 1)

    @property
    def user_message_reference(self) -> int | None:
        return self._tlv_int(TlvTag.USER_MESSAGE_REFERENCE, 2)

    @property
    def sc_interface_version(self) -> int | None:
        return self._tlv_int(TlvTag.SC_INTERFACE_VERSION, 1)


# --------------------------------------------------------------------------- field codecs


def _int_bytes(value: int, size: int, name: str, status: int | None = None) -> bytes:
    if not isinstance(value, int) or not 0 <= value < (1 << (8 * size)):
        raise PduError(
            f"{name} must be an integer in 0..{(1 << (8 * size)) - 1}, got {value!r}",
            CommandStatus.ESME_RSYSERR if status is None else status,
        )
    return value.to_bytes(size, "big")


def _encode_c_string(value: str, max_len: int, name: str, status: int | None) -> bytes:
    status = CommandStatus.ESME_RSYSERR if status is None else status
    if not isinstance(value, str):
        raise PduError(f"{name} must be a str, got {type(value).__name__}", status)
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:
        raise PduError(f"{name} contains characters outside Latin-1: {value!r}", status) from None
    if b"\x00" in raw:
        raise PduError(f"{name} must not contain a NUL character", status)
    if len(raw) + 1 > max_len:
        raise PduError(
            f"{name} is {len(raw)} octets; at most {max_len - 1} plus the NUL are allowed",
            status,
        )
    return raw + b"\x00"


def _encode_tlvs(tlvs: list[Tlv]) -> bytes:
    out = bytearray()
    for tlv in tlvs:
        out += _int_bytes(tlv.tag, 2, "TLV tag")
        if not isinstance(tlv.value, bytes | bytearray):
            raise PduError(f"TLV 0x{tlv.tag:04X} value must be bytes")
        out += _int_bytes(len(tlv.value), 2, f"TLV 0x{tlv.tag:04X} length")
        out += tlv.value
    return bytes(out)


# Fast paths. A PDU on the hot path (submit_sm, deliver_sm and their responses) is encoded and
# decoded first by these, which check the same rules with fewer calls; anything they do not
# accept (a wrong type, a value out of range, a malformed body) goes to the checked path, which
# raises the PduError naming the field. Both paths agree on every input they both accept
# (``tests/channels/smpp/test_pdu.py`` checks it with hypothesis).
_HEADER = struct.Struct(">IIII")
_TLV_HEADER = struct.Struct(">HH")


_TWO_OCTETS = struct.Struct(">BB")
_THREE_OCTETS = struct.Struct(">BBB")
_FIVE_OCTETS = struct.Struct(">BBBBB")


class _Slow(Exception):
    """The fast path declines; the checked path decides."""


def _fast_c_string(value: str, max_len: int) -> bytes:
    raw = value.encode("latin-1")  # AttributeError / UnicodeEncodeError: the checked path
    if len(raw) >= max_len or b"\x00" in raw:
        raise _Slow
    return raw + b"\x00"


def _fast_tlvs(tlvs: list[Tlv]) -> bytes:
    if not tlvs:
        return b""
    out = []
    for tlv in tlvs:
        value = tlv.value
        if type(value) is not bytes:
            raise _Slow
        out.append(_TLV_HEADER.pack(tlv.tag, len(value)))
        out.append(value)
    return b"".join(out)


def _fast_read_c(body: bytes, pos: int, max_len: int) -> tuple[str, int]:
    end = body.index(0, pos, pos + max_len)  # ValueError when absent: the checked path
    return body[pos:end].decode("latin-1"), end + 1


def _fast_read_tlvs(body: bytes, pos: int) -> list[Tlv]:
    out: list[Tlv] = []
    size = len(body)
    while pos < size:
        if pos + 4 > size:
            raise _Slow
        tag, length = _TLV_HEADER.unpack_from(body, pos)
        pos += 4
        if pos + length > size:
            raise _Slow
        out.append(Tlv(tag, body[pos : pos + length]))
        pos += length
    return out


class _BodyReader:
    """Cursor over a PDU body; every failure is a PduError naming the field."""

    def __init__(self, body: bytes, command_id: int, sequence_number: int) -> None:
        self.body = body
        self.pos = 0
        self.command_id = command_id
        self.sequence_number = sequence_number
        self.name = _command_name(command_id)

    def error(self, message: str, status: int) -> PduError:
        return PduError(
            f"{self.name}: {message}",
            status,
            self.sequence_number,
            command_id=self.command_id,
        )

    @property
    def remaining(self) -> int:
        return len(self.body) - self.pos

    def c_string(self, name: str, max_len: int, status: int) -> str:
        window = self.body[self.pos : self.pos + max_len]
        end = window.find(b"\x00")
        if end < 0:
            if len(window) < max_len:
                raise self.error(
                    f"{name} has no terminating NUL before the end of the body", status
                )
            raise self.error(
                f"{name} is longer than its maximum of {max_len} octets (NUL included)",
                status,
            )
        value = window[:end].decode("latin-1")
        self.pos += end + 1
        return value

    def u8(self, name: str) -> int:
        if self.remaining < 1:
            raise self.error(f"body ends before {name} (1 octet)", CommandStatus.ESME_RINVCMDLEN)
        value = self.body[self.pos]
        self.pos += 1
        return value

    def octets(self, length: int, name: str, status: int) -> bytes:
        if self.remaining < length:
            raise self.error(
                f"{name} needs {length} octets but only {self.remaining} remain in the body",
                status,
            )
        value = self.body[self.pos : self.pos + length]
        self.pos += length
        return value

    def tlvs(self) -> list[Tlv]:
        out: list[Tlv] = []
        status = CommandStatus.ESME_RINVOPTPARSTREAM
        while self.remaining:
            if self.remaining < 4:
                raise self.error(
                    f"{self.remaining} trailing octet(s) are too short for a TLV header",
                    status,
                )
            tag = int.from_bytes(self.body[self.pos : self.pos + 2], "big")
            length = int.from_bytes(self.body[self.pos + 2 : self.pos + 4], "big")
            self.pos += 4
            if length > self.remaining:
                raise self.error(
                    f"TLV 0x{tag:04X} declares {length} octets but only "
                    f"{self.remaining} remain in the body",
                    status,
                )
            out.append(Tlv(tag, self.body[self.pos : self.pos + length]))
            self.pos += length
        return out

    def end(self) -> None:
        if self.remaining:
            raise self.error(
                f"{self.remaining} unexpected trailing octet(s) after the last field",
                CommandStatus.ESME_RINVCMDLEN,
            )


# --------------------------------------------------------------------------- PDUs


@dataclass(kw_only=True)
class Pdu:
    """Base of every PDU. Subclasses define ``command_id`` and the body codec."""

    command_id: ClassVar[int]
    sequence_number: int = 0
    command_status: int = 0

    def encode_body(self) -> bytes:
        return b""

    @classmethod
    def decode_body(cls, reader: _BodyReader, command_status: int) -> Self:
        reader.end()
        return cls(sequence_number=reader.sequence_number, command_status=command_status)

    def encode(self) -> bytes:
        body = self.encode_body()
        length = HEADER_LENGTH + len(body)
        if length > 0xFFFFFFFF:  # pragma: no cover - cannot happen with checked fields
            raise PduError("PDU too long", CommandStatus.ESME_RINVCMDLEN)
        status, sequence = self.command_status, self.sequence_number
        if type(status) is not int or type(sequence) is not int:  # IntEnum, or wrong: checked
            status = int.from_bytes(_int_bytes(status, 4, "command_status"), "big")
            sequence = int.from_bytes(_int_bytes(sequence, 4, "sequence_number"), "big")
        try:
            return _HEADER.pack(length, self.command_id, status, sequence) + body
        except struct.error:
            _int_bytes(status, 4, "command_status")  # raises the error that names the field
            _int_bytes(sequence, 4, "sequence_number")
            raise  # pragma: no cover - the checks above raise first


@dataclass(kw_only=True)
class Bind(Pdu):
    """bind_transmitter / bind_receiver / bind_transceiver body (3.4 section 4.1)."""

    system_id: str = ""
    password: str = ""
    system_type: str = ""
    interface_version: int = INTERFACE_VERSION_34
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""

    def encode_body(self) -> bytes:
        s = CommandStatus
        return b"".join(
            [
                _encode_c_string(self.system_id, 16, "system_id", s.ESME_RINVSYSID),
                _encode_c_string(self.password, 9, "password", s.ESME_RINVPASWD),
                _encode_c_string(self.system_type, 13, "system_type", s.ESME_RINVSYSTYP),
                _int_bytes(self.interface_version, 1, "interface_version"),
                _int_bytes(self.addr_ton, 1, "addr_ton"),
                _int_bytes(self.addr_npi, 1, "addr_npi"),
                _encode_c_string(self.address_range, 41, "address_range", s.ESME_RBINDFAIL),
            ]
        )

    @classmethod
    def decode_body(cls, reader: _BodyReader, command_status: int) -> Self:
        s = CommandStatus
        pdu = cls(
            sequence_number=reader.sequence_number,
            command_status=command_status,
            system_id=reader.c_string("system_id", 16, s.ESME_RINVSYSID),
            password=reader.c_string("password", 9, s.ESME_RINVPASWD),
            system_type=reader.c_string("system_type", 13, s.ESME_RINVSYSTYP),
            interface_version=reader.u8("interface_version"),
            addr_ton=reader.u8("addr_ton"),
            addr_npi=reader.u8("addr_npi"),
            address_range=reader.c_string("address_range", 41, s.ESME_RBINDFAIL),
        )
        reader.end()
        return pdu


@dataclass(kw_only=True)
class BindTransmitter(Bind):
    command_id: ClassVar[int] = CommandId.BIND_TRANSMITTER


@dataclass(kw_only=True)
class BindReceiver(Bind):
    command_id: ClassVar[int] = CommandId.BIND_RECEIVER


@dataclass(kw_only=True)
class BindTransceiver(Bind):
    command_id: ClassVar[int] = CommandId.BIND_TRANSCEIVER


@dataclass(kw_only=True)
class BindResp(_TlvAccess, Pdu):
    """bind_*_resp body: system_id then optional TLVs (sc_interface_version).

    An error response may come without a body; it decodes with ``system_id == ""``.
    """

    system_id: str = ""
    tlvs: list[Tlv] = field(default_factory=list)

    def encode_body(self) -> bytes:
        s = CommandStatus.ESME_RINVSYSID
        return _encode_c_string(self.system_id, 16, "system_id", s) + _encode_tlvs(self.tlvs)

    @classmethod
    def decode_body(cls, reader: _BodyReader, command_status: int) -> Self:
        pdu = cls(sequence_number=reader.sequence_number, command_status=command_status)
        if reader.remaining:
            pdu.system_id = reader.c_string("system_id", 16, CommandStatus.ESME_RINVSYSID)
            pdu.tlvs = reader.tlvs()
        return pdu


@dataclass(kw_only=True)
class BindTransmitterResp(BindResp):
    command_id: ClassVar[int] = CommandId.BIND_TRANSMITTER_RESP


@dataclass(kw_only=True)
class BindReceiverResp(BindResp):
    command_id: ClassVar[int] = CommandId.BIND_RECEIVER_RESP


@dataclass(kw_only=True)
class BindTransceiverResp(BindResp):
    command_id: ClassVar[int] = CommandId.BIND_TRANSCEIVER_RESP


@dataclass(kw_only=True)
class ShortMessagePdu(_TlvAccess, Pdu):
    """Common body of submit_sm (3.4 section 4.4.1) and deliver_sm (section 4.6.1)."""

    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""
    tlvs: list[Tlv] = field(default_factory=list)

    def _encode_fast(self) -> bytes:
        sm = self.short_message
        if type(sm) is not bytes or len(sm) > SM_MAX_LENGTH:
            raise _Slow
        return b"".join(
            (
                _fast_c_string(self.service_type, 6),
                _TWO_OCTETS.pack(self.source_addr_ton, self.source_addr_npi),
                _fast_c_string(self.source_addr, 21),
                _TWO_OCTETS.pack(self.dest_addr_ton, self.dest_addr_npi),
                _fast_c_string(self.destination_addr, 21),
                _THREE_OCTETS.pack(self.esm_class, self.protocol_id, self.priority_flag),
                _fast_c_string(self.schedule_delivery_time, 17),
                _fast_c_string(self.validity_period, 17),
                _FIVE_OCTETS.pack(
                    self.registered_delivery,
                    self.replace_if_present_flag,
                    self.data_coding,
                    self.sm_default_msg_id,
                    len(sm),
                ),
                sm,
                _fast_tlvs(self.tlvs),
            )
        )

    @classmethod
    def _decode_fast(cls, body: bytes, sequence_number: int, command_status: int) -> Self:
        service_type, pos = _fast_read_c(body, 0, 6)
        source_ton, source_npi = body[pos], body[pos + 1]
        source_addr, pos = _fast_read_c(body, pos + 2, 21)
        dest_ton, dest_npi = body[pos], body[pos + 1]
        destination_addr, pos = _fast_read_c(body, pos + 2, 21)
        esm_class, protocol_id, priority_flag = body[pos], body[pos + 1], body[pos + 2]
        schedule, pos = _fast_read_c(body, pos + 3, 17)
        validity, pos = _fast_read_c(body, pos, 17)
        registered, replace, coding, default_id, sm_length = _FIVE_OCTETS.unpack_from(body, pos)
        pos += 5
        if sm_length > SM_MAX_LENGTH or pos + sm_length > len(body):
            raise _Slow
        return cls(
            sequence_number=sequence_number,
            command_status=command_status,
            service_type=service_type,
            source_addr_ton=source_ton,
            source_addr_npi=source_npi,
            source_addr=source_addr,
            dest_addr_ton=dest_ton,
            dest_addr_npi=dest_npi,
            destination_addr=destination_addr,
            esm_class=esm_class,
            protocol_id=protocol_id,
            priority_flag=priority_flag,
            schedule_delivery_time=schedule,
            validity_period=validity,
            registered_delivery=registered,
            replace_if_present_flag=replace,
            data_coding=coding,
            sm_default_msg_id=default_id,
            short_message=body[pos : pos + sm_length],
            tlvs=_fast_read_tlvs(body, pos + sm_length),
        )

    def encode_body(self) -> bytes:
        try:
            return self._encode_fast()
        except (_Slow, struct.error, AttributeError, UnicodeEncodeError):
            return self._encode_checked()

    def _encode_checked(self) -> bytes:
        s = CommandStatus
        if not isinstance(self.short_message, bytes | bytearray):
            raise PduError("short_message must be bytes", s.ESME_RINVMSGLEN)
        if len(self.short_message) > SM_MAX_LENGTH:
            raise PduError(
                f"short_message is {len(self.short_message)} octets; at most "
                f"{SM_MAX_LENGTH} are allowed (use message_payload for longer content)",
                s.ESME_RINVMSGLEN,
            )
        return b"".join(
            [
                _encode_c_string(self.service_type, 6, "service_type", s.ESME_RINVSERTYP),
                _int_bytes(self.source_addr_ton, 1, "source_addr_ton", s.ESME_RINVSRCTON),
                _int_bytes(self.source_addr_npi, 1, "source_addr_npi", s.ESME_RINVSRCNPI),
                _encode_c_string(self.source_addr, 21, "source_addr", s.ESME_RINVSRCADR),
                _int_bytes(self.dest_addr_ton, 1, "dest_addr_ton", s.ESME_RINVDSTTON),
                _int_bytes(self.dest_addr_npi, 1, "dest_addr_npi", s.ESME_RINVDSTNPI),
                _encode_c_string(self.destination_addr, 21, "destination_addr", s.ESME_RINVDSTADR),
                _int_bytes(self.esm_class, 1, "esm_class", s.ESME_RINVESMCLASS),
                _int_bytes(self.protocol_id, 1, "protocol_id"),
                _int_bytes(self.priority_flag, 1, "priority_flag", s.ESME_RINVPRTFLG),
                _encode_c_string(
                    self.schedule_delivery_time, 17, "schedule_delivery_time", s.ESME_RINVSCHED
                ),
                _encode_c_string(self.validity_period, 17, "validity_period", s.ESME_RINVEXPIRY),
                _int_bytes(
                    self.registered_delivery, 1, "registered_delivery", s.ESME_RINVREGDLVFLG
                ),
                _int_bytes(
                    self.replace_if_present_flag, 1, "replace_if_present_flag", s.ESME_RINVREPFLAG
                ),
                _int_bytes(self.data_coding, 1, "data_coding"),
                _int_bytes(self.sm_default_msg_id, 1, "sm_default_msg_id", s.ESME_RINVDFTMSGID),
                bytes([len(self.short_message)]),
                bytes(self.short_message),
                _encode_tlvs(self.tlvs),
            ]
        )

    @classmethod
    def decode_body(cls, reader: _BodyReader, command_status: int) -> Self:
        try:
            return cls._decode_fast(reader.body, reader.sequence_number, command_status)
        except (_Slow, ValueError, IndexError, struct.error):
            return cls._decode_checked(reader, command_status)

    @classmethod
    def _decode_checked(cls, reader: _BodyReader, command_status: int) -> Self:
        s = CommandStatus
        r = reader
        pdu = cls(
            sequence_number=r.sequence_number,
            command_status=command_status,
            service_type=r.c_string("service_type", 6, s.ESME_RINVSERTYP),
            source_addr_ton=r.u8("source_addr_ton"),
            source_addr_npi=r.u8("source_addr_npi"),
            source_addr=r.c_string("source_addr", 21, s.ESME_RINVSRCADR),
            dest_addr_ton=r.u8("dest_addr_ton"),
            dest_addr_npi=r.u8("dest_addr_npi"),
            destination_addr=r.c_string("destination_addr", 21, s.ESME_RINVDSTADR),
            esm_class=r.u8("esm_class"),
            protocol_id=r.u8("protocol_id"),
            priority_flag=r.u8("priority_flag"),
            schedule_delivery_time=r.c_string("schedule_delivery_time", 17, s.ESME_RINVSCHED),
            validity_period=r.c_string("validity_period", 17, s.ESME_RINVEXPIRY),
            registered_delivery=r.u8("registered_delivery"),
            replace_if_present_flag=r.u8("replace_if_present_flag"),
            data_coding=r.u8("data_coding"),
            sm_default_msg_id=r.u8("sm_default_msg_id"),
        )
        sm_length = r.u8("sm_length")
        if sm_length > SM_MAX_LENGTH:
            raise r.error(
                f"sm_length {sm_length} exceeds the maximum of {SM_MAX_LENGTH}",
                s.ESME_RINVMSGLEN,
            )
        pdu.short_message = r.octets(sm_length, "short_message", s.ESME_RINVMSGLEN)
        pdu.tlvs = r.tlvs()
        return pdu


@dataclass(kw_only=True)
class SubmitSm(ShortMessagePdu):
    command_id: ClassVar[int] = CommandId.SUBMIT_SM


@dataclass(kw_only=True)
class DeliverSm(ShortMessagePdu):
    """deliver_sm; schedule_delivery_time, validity_period and replace_if_present_flag
    should be empty/zero per spec but are decoded as sent."""

    command_id: ClassVar[int] = CommandId.DELIVER_SM


@dataclass(kw_only=True)
class _MessageIdResp(_TlvAccess, Pdu):
    """submit_sm_resp / deliver_sm_resp / data_sm_resp: message_id (max 65) [+ TLVs].

    SMPP 3.4 defines no TLVs for submit_sm_resp / deliver_sm_resp, but SMPP 5.0 servers add
    some (additional_status_info_text ...), so they are accepted and preserved. A response
    without any body (common with a non-zero command_status) decodes with message_id "".
    """

    message_id: str = ""
    tlvs: list[Tlv] = field(default_factory=list)

    def encode_body(self) -> bytes:
        if not self.tlvs:
            try:
                return _fast_c_string(self.message_id, 65)
            except (_Slow, AttributeError, UnicodeEncodeError):
                pass
        s = CommandStatus.ESME_RINVMSGID
        return _encode_c_string(self.message_id, 65, "message_id", s) + _encode_tlvs(self.tlvs)

    @classmethod
    def decode_body(cls, reader: _BodyReader, command_status: int) -> Self:
        pdu = cls(sequence_number=reader.sequence_number, command_status=command_status)
        body = reader.body
        if body and body[-1] == 0 and body.find(0) == len(body) - 1 and len(body) <= 65:
            pdu.message_id = body[:-1].decode("latin-1")  # the common case: an id, no TLVs
            return pdu
        if reader.remaining:
            pdu.message_id = reader.c_string("message_id", 65, CommandStatus.ESME_RINVMSGID)
            pdu.tlvs = reader.tlvs()
        return pdu


@dataclass(kw_only=True)
class SubmitSmResp(_MessageIdResp):
    command_id: ClassVar[int] = CommandId.SUBMIT_SM_RESP


@dataclass(kw_only=True)
class DeliverSmResp(_MessageIdResp):
    command_id: ClassVar[int] = CommandId.DELIVER_SM_RESP


@dataclass(kw_only=True)
class DataSmResp(_MessageIdResp):
    command_id: ClassVar[int] = CommandId.DATA_SM_RESP


@dataclass(kw_only=True)
class DataSm(_TlvAccess, Pdu):
    """data_sm (3.4 section 4.7.1); addresses here are up to 65 octets."""

    command_id: ClassVar[int] = CommandId.DATA_SM

    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    registered_delivery: int = 0
    data_coding: int = 0
    tlvs: list[Tlv] = field(default_factory=list)

    def encode_body(self) -> bytes:
        s = CommandStatus
        return b"".join(
            [
                _encode_c_string(self.service_type, 6, "service_type", s.ESME_RINVSERTYP),
                _int_bytes(self.source_addr_ton, 1, "source_addr_ton", s.ESME_RINVSRCTON),
                _int_bytes(self.source_addr_npi, 1, "source_addr_npi", s.ESME_RINVSRCNPI),
                _encode_c_string(self.source_addr, 65, "source_addr", s.ESME_RINVSRCADR),
                _int_bytes(self.dest_addr_ton, 1, "dest_addr_ton", s.ESME_RINVDSTTON),
                _int_bytes(self.dest_addr_npi, 1, "dest_addr_npi", s.ESME_RINVDSTNPI),
                _encode_c_string(self.destination_addr, 65, "destination_addr", s.ESME_RINVDSTADR),
                _int_bytes(self.esm_class, 1, "esm_class", s.ESME_RINVESMCLASS),
                _int_bytes(
                    self.registered_delivery, 1, "registered_delivery", s.ESME_RINVREGDLVFLG
                ),
                _int_bytes(self.data_coding, 1, "data_coding"),
                _encode_tlvs(self.tlvs),
            ]
        )

    @classmethod
    def decode_body(cls, reader: _BodyReader, command_status: int) -> Self:
        s = CommandStatus
        r = reader
        pdu = cls(
            sequence_number=r.sequence_number,
            command_status=command_status,
            service_type=r.c_string("service_type", 6, s.ESME_RINVSERTYP),
            source_addr_ton=r.u8("source_addr_ton"),
            source_addr_npi=r.u8("source_addr_npi"),
            source_addr=r.c_string("source_addr", 65, s.ESME_RINVSRCADR),
            dest_addr_ton=r.u8("dest_addr_ton"),
            dest_addr_npi=r.u8("dest_addr_npi"),
            destination_addr=r.c_string("destination_addr", 65, s.ESME_RINVDSTADR),
            esm_class=r.u8("esm_class"),
            registered_delivery=r.u8("registered_delivery"),
            data_coding=r.u8("data_coding"),
        )
        pdu.tlvs = r.tlvs()
        return pdu


@dataclass(kw_only=True)
class EnquireLink(Pdu):
    command_id: ClassVar[int] = CommandId.ENQUIRE_LINK


@dataclass(kw_only=True)
class EnquireLinkResp(Pdu):
    command_id: ClassVar[int] = CommandId.ENQUIRE_LINK_RESP


@dataclass(kw_only=True)
class Unbind(Pdu):
    command_id: ClassVar[int] = CommandId.UNBIND


@dataclass(kw_only=True)
class UnbindResp(Pdu):
    command_id: ClassVar[int] = CommandId.UNBIND_RESP


@dataclass(kw_only=True)
class GenericNack(Pdu):
    command_id: ClassVar[int] = CommandId.GENERIC_NACK


_PDU_CLASSES: dict[int, type[Pdu]] = {
    cls.command_id: cls
    for cls in (
        BindTransmitter,
        BindReceiver,
        BindTransceiver,
        BindTransmitterResp,
        BindReceiverResp,
        BindTransceiverResp,
        SubmitSm,
        SubmitSmResp,
        DeliverSm,
        DeliverSmResp,
        DataSm,
        DataSmResp,
        EnquireLink,
        EnquireLinkResp,
        Unbind,
        UnbindResp,
        GenericNack,
    )
}


def _command_name(command_id: int) -> str:
    try:
        return CommandId(command_id).name.lower()
    except ValueError:
        return f"command 0x{command_id:08X}"


# --------------------------------------------------------------------------- encode/decode


def encode(pdu: Pdu) -> bytes:
    """Serialise one PDU, header included. Invalid field values raise PduError."""
    try:
        return pdu.encode()
    except PduError as exc:
        if exc.sequence_number is None and isinstance(pdu.sequence_number, int):
            exc.sequence_number = pdu.sequence_number
        if exc.command_id is None:
            exc.command_id = pdu.command_id
        raise


def decode(frame: bytes, *, max_length: int = DEFAULT_MAX_PDU_LENGTH) -> Pdu:
    """Decode exactly one whole PDU (header included).

    Raises PduError -- and nothing else -- for any malformed input.
    """
    if type(frame) is not bytes:
        frame = bytes(frame)
    if len(frame) < HEADER_LENGTH:
        raise PduError(
            f"frame is {len(frame)} octets, shorter than the 16-octet PDU header",
            CommandStatus.ESME_RINVCMDLEN,
            fatal=True,
        )
    command_length, command_id, command_status, sequence_number = _HEADER.unpack_from(frame)
    if command_length < HEADER_LENGTH or command_length > max_length:
        raise PduError(
            f"command_length {command_length} is outside {HEADER_LENGTH}..{max_length}",
            CommandStatus.ESME_RINVCMDLEN,
            sequence_number,
            command_id=command_id,
            fatal=True,
        )
    if command_length != len(frame):
        raise PduError(
            f"command_length {command_length} does not match the frame size {len(frame)}",
            CommandStatus.ESME_RINVCMDLEN,
            sequence_number,
            command_id=command_id,
            fatal=True,
        )
    cls = _PDU_CLASSES.get(command_id)
    if cls is None:
        raise PduError(
            f"unknown command_id 0x{command_id:08X}",
            CommandStatus.ESME_RINVCMDID,
            sequence_number,
            command_id=command_id,
        )
    reader = _BodyReader(frame[HEADER_LENGTH:], command_id, sequence_number)
    try:
        return cls.decode_body(reader, command_status)
    except PduError:
        raise
    except (IndexError, ValueError, TypeError, OverflowError) as exc:  # pragma: no cover
        # Defence in depth: the decoders above check every length themselves.
        raise reader.error(f"internal decoding failure: {exc}", CommandStatus.ESME_RSYSERR) from exc


class PduReader:
    """Incremental decoder for a TCP byte stream.

    ``feed(data)`` returns the PDUs completed by ``data`` (possibly none, possibly many).
    The buffer never grows past one PDU of at most ``max_length`` octets plus the bytes of
    the current chunk; a declared ``command_length`` is checked before anything is kept
    for it.

    On a malformed PDU, ``feed`` raises :class:`PduError`; PDUs decoded earlier in the same
    call are in ``error.preceding``. When ``error.fatal`` is false the bad PDU has been
    skipped and the remaining buffered bytes are kept: call ``feed(b"")`` to continue.
    When it is true (bad command_length: framing is lost) every later ``feed`` raises
    again; close the connection.
    """

    def __init__(self, max_length: int = DEFAULT_MAX_PDU_LENGTH) -> None:
        if max_length < HEADER_LENGTH:
            raise ValueError("max_length must be at least 16")
        self.max_length = max_length
        self._buf = bytearray()
        self._broken: PduError | None = None

    @property
    def buffered(self) -> int:
        """Number of octets waiting for the rest of their PDU."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Pdu]:
        if self._broken is not None:
            raise PduError(
                f"stream framing was lost earlier: {self._broken.message}",
                self._broken.command_status,
                self._broken.sequence_number,
                command_id=self._broken.command_id,
                fatal=True,
            )
        self._buf += data
        out: list[Pdu] = []
        pos = 0
        buf = self._buf
        try:
            while len(buf) - pos >= 4:
                length = int.from_bytes(buf[pos : pos + 4], "big")
                if length < HEADER_LENGTH:
                    raise PduError(
                        f"command_length {length} is below the 16-octet header size",
                        CommandStatus.ESME_RINVCMDLEN,
                        fatal=True,
                    )
                if length > self.max_length:
                    if len(buf) - pos < HEADER_LENGTH:
                        break  # wait for the header so the error can carry the sequence
                    raise PduError(
                        f"command_length {length} exceeds the limit of {self.max_length}",
                        CommandStatus.ESME_RINVCMDLEN,
                        int.from_bytes(buf[pos + 12 : pos + 16], "big"),
                        command_id=int.from_bytes(buf[pos + 4 : pos + 8], "big"),
                        fatal=True,
                    )
                if len(buf) - pos < length:
                    break
                frame = bytes(buf[pos : pos + length])
                pos += length
                out.append(decode(frame, max_length=self.max_length))
        except PduError as exc:
            if exc.fatal:
                self._broken = exc
                self._buf = bytearray()
            else:
                del buf[:pos]
            exc.preceding = out
            raise
        del buf[:pos]
        return out


# --------------------------------------------------------------------------- receipts

_STAT_TO_STATE: dict[str, MessageState] = {
    "ENROUTE": MessageState.ENROUTE,
    "DELIVRD": MessageState.DELIVERED,
    "EXPIRED": MessageState.EXPIRED,
    "DELETED": MessageState.DELETED,
    "UNDELIV": MessageState.UNDELIVERABLE,
    "ACCEPTD": MessageState.ACCEPTED,
    "UNKNOWN": MessageState.UNKNOWN,
    "REJECTD": MessageState.REJECTED,
}
_STATE_TO_STAT: dict[MessageState, str] = {v: k for k, v in _STAT_TO_STATE.items()}
# Long spellings some carriers use instead of the 7-letter forms.
_STAT_ALIASES: dict[str, str] = {
    "DELIVERED": "DELIVRD",
    "UNDELIVERABLE": "UNDELIV",
    "UNDELIVERED": "UNDELIV",
    "ACCEPTED": "ACCEPTD",
    "REJECTED": "REJECTD",
}


def stat_to_state(stat: str) -> MessageState | None:
    """Map a receipt ``stat`` word (any case, long spellings too) to MessageState."""
    word = stat.strip().upper()
    return _STAT_TO_STATE.get(_STAT_ALIASES.get(word, word))


def state_to_stat(state: int) -> str:
    """Map a message_state to the 7-letter receipt ``stat`` word."""
    try:
        return _STATE_TO_STAT[MessageState(state)]
    except ValueError:
        return "UNKNOWN"


@dataclass
class Receipt:
    """A parsed delivery receipt; fields missing from the text are None / ""."""

    message_id: str
    submitted: int | None = None
    delivered: int | None = None
    submit_date: datetime | None = None
    done_date: datetime | None = None
    stat: str = "UNKNOWN"
    err: str = ""
    text: str = ""

    @property
    def state(self) -> MessageState | None:
        return stat_to_state(self.stat)


_RECEIPT_KEY = re.compile(
    r"(?<![A-Za-z0-9_])(id|sub|dlvrd|submit[ \t_]*date|done[ \t_]*date|stat|err|text)[ \t]*:",
    re.IGNORECASE,
)
_KEY_SPACE = re.compile(r"[ \t_]+")
# A key as written ("Submit_Date") → its name ("submit date"); carriers write few variants, and a
# receipt arrives for every message, so each is worked out once (the cache is bounded).
_KEY_NAMES: dict[str, str] = {}


def _receipt_key(raw: str) -> str:
    name = _KEY_NAMES.get(raw)
    if name is None:
        name = _KEY_SPACE.sub(" ", raw.lower())
        name = {"submitdate": "submit date", "donedate": "done date"}.get(name, name)
        if len(_KEY_NAMES) < 256:
            _KEY_NAMES[raw] = name
    return name


def _parse_receipt_date(value: str) -> datetime | None:
    digits = value.strip()
    if not digits.isdigit() or not digits.isascii():
        return None
    try:
        if len(digits) in (10, 12):
            second = int(digits[10:12]) if len(digits) == 12 else 0
            return datetime(
                2000 + int(digits[0:2]),
                int(digits[2:4]),
                int(digits[4:6]),
                int(digits[6:8]),
                int(digits[8:10]),
                second,
            )
        if len(digits) == 14:  # YYYYMMDDhhmmss, seen from some aggregators
            return datetime.strptime(digits, "%Y%m%d%H%M%S")
    except ValueError:
        return None
    return None


def _parse_count(value: str) -> int | None:
    value = value.strip()
    if value.isascii() and value.isdigit():
        return int(value)
    return None


# The receipt text exactly as most SMSCs (and the sandbox) write it: parsed with one match. Any
# other spelling, order or spacing goes through the general parser, which gives the same result
# for this form too (a hypothesis test holds the two together).
_CANONICAL_RECEIPT = re.compile(
    r"id:([0-9A-Za-z]{1,65}) sub:([0-9]{3}) dlvrd:([0-9]{3})"
    r" submit date:([0-9]{10}|[0-9]{12}) done date:([0-9]{10}|[0-9]{12})"
    r" stat:(DELIVRD|UNDELIV|EXPIRED|REJECTD|DELETED|ACCEPTD|UNKNOWN|ENROUTE)"
    r" err:([0-9A-Za-z]{0,8}) text:(.*)",
    re.DOTALL,
)


def parse_receipt_text(text: str) -> Receipt | None:
    """Parse the de-facto receipt text (SMPP 3.4 appendix B).

    ``id:IIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD
    err:E text: ...`` -- keys in any case, with any spacing, in any order, some missing;
    dates with 10 or 12 digits (or 14, YYYYMMDDhhmmss). The id is kept verbatim (see
    :func:`normalise_message_id`). Everything after ``text:`` is the text. Returns None
    unless an ``id`` and at least one other receipt field are present.
    """
    match = _CANONICAL_RECEIPT.fullmatch(text)
    if match is not None:
        mid, sub, dlvrd, submit_date, done_date, stat, err, rest = match.groups()
        return Receipt(
            message_id=mid,
            submitted=int(sub),
            delivered=int(dlvrd),
            submit_date=_parse_receipt_date(submit_date),
            done_date=_parse_receipt_date(done_date),
            stat=stat,
            err=err,
            text=rest.strip(),
        )
    return _parse_receipt_fields(text)


def _parse_receipt_fields(text: str) -> Receipt | None:
    """The general receipt parser: keys in any case, order and spacing."""
    fields: dict[str, str] = {}
    matches = list(_RECEIPT_KEY.finditer(text))
    for index, match in enumerate(matches):
        key = _receipt_key(match.group(1))
        if key == "text":
            fields.setdefault(key, text[match.end() :].strip())
            break
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        fields.setdefault(key, text[match.end() : end].strip())
    if "id" not in fields or len(fields) < 2:
        return None
    stat = fields.get("stat", "").upper() or "UNKNOWN"
    return Receipt(
        message_id=fields["id"],
        submitted=_parse_count(fields.get("sub", "")),
        delivered=_parse_count(fields.get("dlvrd", "")),
        submit_date=_parse_receipt_date(fields.get("submit date", "")),
        done_date=_parse_receipt_date(fields.get("done date", "")),
        stat=_STAT_ALIASES.get(stat, stat),
        err=fields.get("err", ""),
        text=fields.get("text", ""),
    )


def format_receipt_text(receipt: Receipt, *, seconds: bool = False) -> str:
    """Render a receipt in the de-facto format (for the sandbox SMSC).

    Dates use YYMMDDhhmm (YYMMDDhhmmss with ``seconds``); None fields are left out.
    """
    parts = [f"id:{receipt.message_id}"]
    if receipt.submitted is not None:
        parts.append(f"sub:{receipt.submitted:03d}")
    if receipt.delivered is not None:
        parts.append(f"dlvrd:{receipt.delivered:03d}")
    if receipt.submit_date is not None:
        parts.append(f"submit date:{_receipt_date(receipt.submit_date, seconds)}")
    if receipt.done_date is not None:
        parts.append(f"done date:{_receipt_date(receipt.done_date, seconds)}")
    parts.append(f"stat:{receipt.stat}")
    parts.append(f"err:{receipt.err}")
    parts.append(f"text:{receipt.text}")
    return " ".join(parts)


def _receipt_date(d: datetime, seconds: bool) -> str:
    """YYMMDDhhmm[ss], as ``strftime("%y%m%d%H%M[%S]")`` writes it, without its cost."""
    text = f"{d.year % 100:02d}{d.month:02d}{d.day:02d}{d.hour:02d}{d.minute:02d}"
    return f"{text}{d.second:02d}" if seconds else text


_HEX_ID = re.compile(r"[0-9A-Fa-f]+")
_DEC_ID = re.compile(r"[0-9]+")


def normalise_message_id(raw: str, style: Literal["hex", "decimal", "verbatim"]) -> str:
    """Canonical form of a message id so submit_sm_resp and receipt ids compare equal.

    With ``style="hex"`` or ``"decimal"`` a numeric id in that base becomes lower-case hex
    without leading zeros ("0" for zero); anything not numeric in that base, and every id
    with ``style="verbatim"``, is returned unchanged.
    """
    if style == "verbatim":
        return raw
    candidate = raw.strip()
    pattern, base = (_HEX_ID, 16) if style == "hex" else (_DEC_ID, 10)
    if not pattern.fullmatch(candidate):
        return raw
    try:
        return format(int(candidate, base), "x")
    except ValueError:  # e.g. beyond Python's int-from-str digit limit
        return raw


# --------------------------------------------------------------------------- UDH


@dataclass(frozen=True)
class ConcatInfo:
    """Concatenated-SMS information element (3GPP TS 23.040 9.2.3.24.1 / .8)."""

    reference: int
    total: int
    seq: int
    reference_bits: Literal[8, 16] = 8


def _check_concat(ref: int, total: int, seq: int, ref_max: int) -> None:
    if not 0 <= ref <= ref_max:
        raise ValueError(f"reference must be in 0..{ref_max}, got {ref}")
    if not 1 <= total <= 255:
        raise ValueError(f"total must be in 1..255, got {total}")
    if not 1 <= seq <= total:
        raise ValueError(f"seq must be in 1..{total}, got {seq}")


def udh_concat(ref: int, total: int, seq: int) -> bytes:
    """UDH with an 8-bit-reference concatenation IE: 05 00 03 ref total seq."""
    _check_concat(ref, total, seq, 0xFF)
    return bytes([0x05, 0x00, 0x03, ref, total, seq])


def udh_concat16(ref: int, total: int, seq: int) -> bytes:
    """UDH with a 16-bit-reference concatenation IE: 06 08 04 refhi reflo total seq."""
    _check_concat(ref, total, seq, 0xFFFF)
    return bytes([0x06, 0x08, 0x04, ref >> 8, ref & 0xFF, total, seq])


def split_udh(short_message: bytes) -> tuple[ConcatInfo | None, bytes]:
    """Split a UDHI short_message (esm_class & 0x40) into concat info and payload.

    The UDH is removed from the payload whatever IEs it holds; the concat info is None
    when no valid concatenation IE is present (per 23.040 an IE with total 0 or seq out
    of range is ignored). A UDH that overruns the message raises PduError
    (ESME_RINVESMCLASS: the UDHI flag does not match the content).
    """
    status = CommandStatus.ESME_RINVESMCLASS
    if not short_message:
        raise PduError("UDHI is set but short_message is empty", status)
    udhl = short_message[0]
    if 1 + udhl > len(short_message):
        raise PduError(
            f"UDH length {udhl} overruns the {len(short_message)}-octet short_message", status
        )
    header = short_message[1 : 1 + udhl]
    payload = bytes(short_message[1 + udhl :])
    info: ConcatInfo | None = None
    pos = 0
    while pos < len(header):
        if pos + 2 > len(header):
            raise PduError("truncated information element in UDH", status)
        iei, iedl = header[pos], header[pos + 1]
        data = header[pos + 2 : pos + 2 + iedl]
        if len(data) != iedl:
            raise PduError(f"UDH information element 0x{iei:02X} overruns the UDH", status)
        pos += 2 + iedl
        candidate: ConcatInfo | None = None
        if iei == 0x00 and iedl == 3:
            candidate = ConcatInfo(data[0], data[1], data[2], 8)
        elif iei == 0x08 and iedl == 4:
            candidate = ConcatInfo((data[0] << 8) | data[1], data[2], data[3], 16)
        if candidate is not None and 1 <= candidate.seq <= candidate.total:
            info = candidate  # the last valid occurrence wins (23.040 9.2.3.24)
    return info, payload
