import pytest
from pydantic import TypeAdapter, ValidationError
from typing import Annotated

from cardcore.text import Readable, refuse_hidden_characters


@pytest.mark.parametrize(
    "text",
    ["张三", "买买提·艾力", "Zhang San-Li", "门诊一楼挂号窗口 3", "挂号费（普通门诊）", "🩺 检查费", "\u200d", "O'Neil", ""],
)
def test_text_people_write_is_kept_as_it_is(text):
    assert refuse_hidden_characters(text) == text


@pytest.mark.parametrize(
    "char",
    ["\x00", "\x07", "\t", "\n", "\r", "\x1b", "\x7f", "\x85", "\x9f", "\u061c", "\u200e", "\u200f",
     "\u2028", "\u2029", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"],
)
def test_control_and_bidirectional_formatting_characters_are_refused_by_code_point(char):
    with pytest.raises(ValueError, match=f"U\\+{ord(char):04X}"):
        refuse_hidden_characters(f"张{char}三")


def test_readable_refuses_through_pydantic():
    adapter = TypeAdapter(Annotated[str, Readable])
    assert adapter.validate_python("西药房") == "西药房"
    with pytest.raises(ValidationError, match="bidirectional"):
        adapter.validate_python("abc\u202edef")
