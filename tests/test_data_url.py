"""The one data-URL decoder (``data.data_url``) that serve and ``convert --from openai`` share: the bytes of an
inline base64 picture, and a one-line reason with its API code for everything else."""

from __future__ import annotations

import base64

import pytest

from qwenvl_train.data.data_url import DataURLError, data_url_bytes

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))


def test_the_bytes_of_an_inline_picture_in_any_case() -> None:
    encoded = base64.b64encode(PNG).decode()
    assert data_url_bytes(f"data:image/png;base64,{encoded}") == PNG
    assert data_url_bytes(f"data:IMAGE/PNG;BASE64,{encoded}") == PNG
    assert data_url_bytes(f"data:image/png;name=x.png;base64,{encoded}", max_bytes=len(PNG)) == PNG


@pytest.mark.parametrize(
    ("url", "code", "message"),
    [
        ("data:image/png,abc", "invalid_url", "a data URL must be 'data:image/<type>;base64,<data>'"),
        ("data:image/png;base64", "invalid_url", "a data URL must be 'data:image/<type>;base64,<data>'"),
        ("data:text/plain;base64,aGk=", "invalid_image", "the data URL holds 'text/plain', not an image"),
        ("data:;base64,aGk=", "invalid_image", "the data URL holds 'no media type', not an image"),
        ("data:image/png;base64,a$b=", "invalid_base64", "the data URL is not valid base64"),
    ],
)
def test_refusals_say_why_in_one_line(url: str, code: str, message: str) -> None:
    with pytest.raises(DataURLError) as caught:
        data_url_bytes(url)
    assert (caught.value.code, str(caught.value)) == (code, message)


def test_a_picture_over_the_limit_is_refused_before_decoding() -> None:
    url = "data:image/png;base64," + base64.b64encode(bytes(300)).decode()
    assert len(data_url_bytes(url, max_bytes=300)) == 300
    with pytest.raises(DataURLError, match="larger than 200 bytes") as caught:
        data_url_bytes(url, max_bytes=200)
    assert caught.value.code == "image_too_large"
