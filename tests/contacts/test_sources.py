"""Telling a file's encoding, and any bytes at all read or refused with the import's own error
(pure; the import's own tests read files of each kind whole)."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hongyan.contacts.sources import ImportFileError, check_whole, detect_encoding, open_table

HEADER = "手机号,姓名,城市,备注\n"
PEOPLE = [("王小明", "北京"), ("李娜", "上海"), ("张伟", "深圳"), ("陈美玲", "广州"),
          ("林志强", "杭州"), ("黄淑芬", "成都"), ("喆", "昇"), ("堃", "赟")]  # fmt: skip
TRADITIONAL = [("張偉", "臺北"), ("陳美玲", "高雄"), ("林志強", "台中"), ("黃淑芬", "新竹"),
               ("吳建宏", "桃園"), ("劉怡君", "台南")]  # fmt: skip


def _rows(people: list[tuple[str, str]], times: int, note: str) -> str:
    return "".join(
        f"1380000{i:04d},{name},{city},{note}\n" for i, (name, city) in enumerate(people * times)
    )


@pytest.mark.parametrize("times", [1, 3, 40])
def test_gbk_is_read_as_gb18030_however_short(times: int) -> None:
    text = HEADER + _rows(PEOPLE, times, "老客户，喜欢乌龙茶")
    assert detect_encoding(text.encode("gbk")) == "gb18030"
    assert detect_encoding(text.encode("gb18030")) == "gb18030"


def test_traditional_characters_written_in_gbk_are_gbk() -> None:
    text = "手機號碼,姓名,城市,備註\n" + _rows(TRADITIONAL, 20, "喜歡烏龍茶的老客戶")
    assert detect_encoding(text.encode("gbk")) == "gb18030"


@pytest.mark.parametrize(
    ("encoding", "named"),
    [("big5", "Big5"), ("cp950", "Big5"), ("shift_jis", "Shift-JIS"), ("euc_jp", "EUC-JP")],
)
def test_big5_and_japanese_files_are_refused_by_name(encoding: str, named: str) -> None:
    """GB18030 reads these without an error, as other characters: stored, they would be
    nonsense. The error names what the file looks like."""
    if named == "Big5":
        text = "手機號碼,姓名,城市,備註\n" + _rows(TRADITIONAL, 20, "喜歡烏龍茶的老客戶")
    else:
        people = [("さとう はなこ", "東京"), ("すずき たろう", "大阪"), ("タナカ", "名古屋")]
        text = "電話番号,名前,都市\n" + "".join(
            f"090{i:08d},{n},{c}\n" for i, (n, c) in enumerate(people * 30)
        )
    data = text.encode(encoding)
    data.decode("gb18030")  # (no error: that is the trouble)
    with pytest.raises(ImportFileError) as caught:
        detect_encoding(data)
    assert caught.value.code == "import_encoding" and named in str(caught.value)


_COMMON = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰红"  # noqa: E501
_CITIES = ["北京", "上海", "广州", "深圳", "杭州", "成都", "武汉", "南京", "重庆", "西安"]


@settings(max_examples=120, deadline=None)
@given(
    names=st.lists(st.text(alphabet=_COMMON, min_size=2, max_size=3), min_size=1, max_size=60),
    cities=st.lists(st.sampled_from(_CITIES), min_size=1, max_size=60),
)
def test_any_customer_list_in_gbk_is_gbk(names: list[str], cities: list[str]) -> None:
    rows = "".join(f"139{i:08d},{name},{cities[i % len(cities)]}\n" for i, name in enumerate(names))
    assert detect_encoding(("手机号,姓名,城市\n" + rows).encode("gbk")) == "gb18030"


def test_a_western_european_file_is_refused_too() -> None:
    text = "phone,name,city\n" + "".join(
        f"+3361234{i:04d},José Müller Françoise Øster,Besançon\n" for i in range(40)
    )
    data = text.encode("cp1252")
    with pytest.raises(ImportFileError) as caught:
        detect_encoding(data)
    assert caught.value.code == "import_encoding"


_CSV_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from(list(",;\t|\"'\r\n \x00\ufeff=+-0123456789１３８王李北京\u202e")),
        st.characters(codec="utf-8", exclude_categories=("Cs",)),
    ),
    max_size=300,
)
_CSV_BYTES = st.one_of(
    st.builds(lambda t: ("手机号,姓名\n" + t).encode(), _CSV_TEXT),
    st.builds(lambda t: ("手机号,姓名\n" + t).encode("gb18030"), _CSV_TEXT),
    st.builds(lambda t: ("\ufeff手机号\t姓名\n" + t).encode("utf-16"), _CSV_TEXT),
    st.builds(lambda t, b: ("手机号,姓名\n" + t).encode() + b, _CSV_TEXT, st.binary(max_size=40)),
    st.binary(max_size=300),
)


@settings(max_examples=400, deadline=None)
@given(data=_CSV_BYTES)
def test_any_bytes_are_read_through_or_refused_before_a_row_is_stored(data: bytes) -> None:
    """Whatever a file holds, opening it and the whole-file check raise nothing but the import's
    own error (bilingual); and a file the check lets through is read to its end by the import's
    own reading without an error, so no import stops half-way on the file itself."""
    stream = io.BytesIO(data)
    try:
        check_whole(stream, open_table(stream, len(data)))
    except ImportFileError as exc:
        body = exc.body()
        assert body["code"].startswith("import_") and body["message"]["zh"], body
        return
    for line, cells in open_table(stream, len(data)).rows:
        assert line >= 1 and all(isinstance(c, str) for c in cells)
