"""The gate every text file a user hands over (manifest, pose CSV, labels) passes before it is parsed.

Labs export from many tools: a spreadsheet saved as .xlsx, a CSV in the Windows code page, a binary
file under a .csv name. Each of those is one line here, naming the file, what it is and how to fix
it, instead of a decoder's traceback from deep inside a parser.
"""

from __future__ import annotations

from pathlib import Path

from .errors import DataError

# First bytes of the spreadsheet formats labs export by mistake.
_SPREADSHEETS = (
    (b"PK\x03\x04", "a spreadsheet or other zip file (.xlsx, .ods)"),
    (b"\xd0\xcf\x11\xe0", "an old Excel spreadsheet (.xls)"),
)


def check_text_file(path: str | Path, what: str, missing_fix: str) -> str:
    """The text of `path`, a UTF-8 (or plain ASCII) file; DataError with one line otherwise.

    `what` names the file's role ("labels file"); `missing_fix` is the fix when it does not exist.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a {what}; {missing_fix}")
    if not path.is_file():
        raise DataError(f"{path}: {what} not found; {missing_fix}")
    data = path.read_bytes()
    for magic, kind in _SPREADSHEETS:
        if data.startswith(magic):
            raise DataError(f"{path}: {kind}, not a CSV {what}; export it as CSV (UTF-8) and point at that file")
    if b"\x00" in data[:65536]:
        raise DataError(f"{path}: binary data, not a text {what}; point at the CSV export instead")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(
            f"{path}: not UTF-8 text (byte 0x{data[error.start]:02x} on line {line}, perhaps Latin-1 or Windows-1252); "
            f"save it as UTF-8, e.g. iconv -f cp1252 -t utf-8 {path.name} > fixed{path.suffix}"
        ) from None
