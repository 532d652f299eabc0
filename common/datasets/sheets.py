"""Reading a public dataset's metadata sheet exactly as its publisher distributes it (CSV, XLS or XLSX).

Publishers spell column names inconsistently (CBIS-DDSM: `breast_density` in the mass files, `breast density`
in the calc files; INbreast: `Bi-Rads`, `File Name`), users re-save sheets with `;` as the separator, and
spreadsheet cells come back as floats (`22678622.0`). So every cell is read as text, column names are
compared by a key with case, spaces and punctuation removed, numbers are given back without a spurious
`.0`, and blank rows (spreadsheet padding) are dropped. Each row keeps its sheet line number (header = 1)
so a rejected row can be named without quoting its content.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from common.artifacts import UnusableInput, error_line

SPREADSHEET_SUFFIXES = {".xls": "xlrd", ".xlsx": "openpyxl"}
_NOT_ALPHANUMERIC = re.compile(r"[^0-9a-z]+")
_INTEGRAL_FLOAT = re.compile(r"^(-?\d+)\.0+$")


def column_key(name: object) -> str:
    """`Bi-Rads` -> `birads`, `breast density` and `breast_density` -> `breastdensity`."""
    return _NOT_ALPHANUMERIC.sub("", str(name).lower())


@dataclass(frozen=True)
class Sheet:
    """Text cells under normalised column keys, plus `line` (the row's line in the sheet, header = 1)."""

    name: str
    frame: pd.DataFrame

    def require(self, *keys: str) -> None:
        missing = [key for key in keys if key not in self.frame.columns]
        if missing:
            found = ", ".join(c for c in self.frame.columns if c != "line") or "none"
            raise UnusableInput(f"{self.name}: missing column(s) {', '.join(missing)} (found: {found})")

    def column(self, key: str, default: str = "") -> pd.Series:
        if key in self.frame.columns:
            return self.frame[key]
        return pd.Series(default, index=self.frame.index, dtype=object)

    def where(self, line: int) -> str:
        return f"{self.name} line {line}"


def read_sheet(path: str | Path) -> Sheet:
    """Read one metadata file; raises UnusableInput with a one-line reason when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise UnusableInput(f"metadata file {path} not found")
    suffix = path.suffix.lower()
    try:
        if suffix in SPREADSHEET_SUFFIXES:
            raw = pd.read_excel(path, dtype=str, header=None, engine=SPREADSHEET_SUFFIXES[suffix])
        else:
            raw = pd.read_csv(path, dtype=str, header=None, keep_default_na=False, sep=_separator(path),
                              encoding="utf-8-sig", engine="python")
    except ImportError as error:
        raise UnusableInput(f"{path.name}: reading {suffix} needs {error.name}; export the sheet as CSV") from None
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        detail = error_line(error, 160)
        raise UnusableInput(f"{path.name}: not a readable {suffix.lstrip('.') or 'CSV'} sheet ({detail})") from None
    raw = raw.fillna("").map(_clean_cell)
    if raw.empty:
        raise UnusableInput(f"{path.name}: empty sheet")
    header = [column_key(name) for name in raw.iloc[0]]
    frame = raw.iloc[1:].copy()
    frame.columns = header
    frame = frame.loc[:, [bool(key) for key in header]]
    frame = frame.loc[:, ~frame.columns.duplicated()]
    frame.insert(0, "line", range(2, len(frame) + 2))
    blank = (frame.drop(columns="line") == "").all(axis=1)
    return Sheet(path.name, frame[~blank].reset_index(drop=True))


def _separator(path: Path) -> str:
    """`,` (as published) or `;`/tab (a spreadsheet's CSV export in many locales), sniffed from the header."""
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        first = handle.readline()
    try:
        return csv.Sniffer().sniff(first, delimiters=",;\t").delimiter
    except csv.Error:
        return ","


def _clean_cell(value: object) -> str:
    """Trim stray whitespace and newlines (CBIS-DDSM paths carry them) and drop a float's `.0`."""
    text = " ".join(str(value).split())
    match = _INTEGRAL_FLOAT.match(text)
    return match.group(1) if match else text
