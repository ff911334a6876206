"""The Asterisk PBX's English prompts as a speech dataset: real recordings of one speaker (Allison
Smith) reading 561 telephone prompts, 25 minutes at 8 kHz, from Debian's `asterisk-core-sounds-en`
(transcripts) and `asterisk-core-sounds-en-wav` (16-bit mono WAV) packages, CC-BY-SA-3.0.

    python -m bigmodel_jax.data.asterisk fetch     # the two .debs, unpacked under ~/.cache/bigmodel_jax

`fetch` uses `apt-get download` where there is one (Debian, Ubuntu) and the Debian archive over
HTTP elsewhere, and unpacks the packages itself (a .deb is an `ar` archive around a tar). With
`apt-get install` the files are already in /usr/share, which `data.path="/"` reads.

The split is by utterance, a stable hash of the prompt's name (80/10/10): a sentence recorded once
is in one split only, but many prompts share phrases ("followed by the pound key"), so the test set
holds new sentences of a seen voice and mostly seen words, not new speakers or new vocabulary.
"""

from __future__ import annotations

import argparse
import gzip
import io
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import wave
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from bigmodel_jax.data import prepare
from bigmodel_jax.data.labeled import split_key, split_name

PACKAGES = ("asterisk-core-sounds-en", "asterisk-core-sounds-en-wav")
VERSION = "1.6.1-1"  # Debian's, in bookworm and trixie
POOL = "https://deb.debian.org/debian/pool/main/a/asterisk-core-sounds"
DEFAULT_ROOT = "~/.cache/bigmodel_jax/asterisk-sounds"
SOUNDS = "usr/share/asterisk/sounds/en_US_f_Allison"
TRANSCRIPTS = "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
SAMPLE_RATE = 8000
FETCH = "python -m bigmodel_jax.data.asterisk fetch"


def _unpack_deb(deb: Path, dest: Path) -> None:
    """The data.tar.* member of a .deb (an `ar` archive: 8-byte magic, then 60-byte headers) into dest."""
    blob = deb.read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        raise ValueError(f"{deb} is not a Debian package (no ar header)")
    pos = 8
    while pos + 60 <= len(blob):
        name, size = blob[pos:pos + 16].decode().strip().rstrip("/"), int(blob[pos + 48:pos + 58])
        body = blob[pos + 60:pos + 60 + size]
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                tar.extractall(dest, filter="data")
            return
        pos += 60 + size + size % 2
    raise ValueError(f"{deb} has no data.tar member")


def fetch(root: str | Path = DEFAULT_ROOT) -> Path:
    """Both packages unpacked under root (whole or not at all); returns root."""
    root = Path(root).expanduser()
    if (root / TRANSCRIPTS).is_file() and (root / SOUNDS).is_dir():
        return root
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if shutil.which("apt-get"):
            subprocess.run(["apt-get", "download", *PACKAGES], cwd=tmp, check=True)
        else:
            for package in PACKAGES:
                url = f"{POOL}/{package}_{VERSION}_all.deb"
                with urllib.request.urlopen(url, timeout=60) as r:
                    (tmp / f"{package}.deb").write_bytes(r.read())
        unpacked = tmp / "root"
        for deb in sorted(tmp.glob("*.deb")):
            _unpack_deb(deb, unpacked)
        root.parent.mkdir(parents=True, exist_ok=True)
        prepare.save_whole(lambda path: shutil.copytree(unpacked, path), root)
    return root


def find_root(path: str) -> Path:
    """data.path, or where `fetch` puts the files; a clear error naming the command when absent."""
    root = Path(path or DEFAULT_ROOT).expanduser()
    if not (root / TRANSCRIPTS).is_file():
        raise FileNotFoundError(f"no Asterisk prompts under {root} ({TRANSCRIPTS} is missing): run `{FETCH}`, or "
                                "`apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-en` and set "
                                "data.path=/")
    return root


def read_transcripts(path: str | Path) -> dict[str, str]:
    """core-sounds-en.txt(.gz): `name: text` per line, `;` comments, blank lines."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    out = {}
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith(";"):
                continue
            name, sep, text = line.partition(":")
            if not sep or not name.strip():
                raise ValueError(f"{path}:{lineno}: expected `name: text`, got {line[:80]!r}")
            out[name.strip()] = text.strip()
    return out


def read_wav(path: str | Path) -> np.ndarray:
    """16-bit mono PCM at 8 kHz as int16 samples."""
    try:
        with wave.open(str(path)) as w:
            shape = (w.getnchannels(), w.getsampwidth(), w.getframerate())
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as e:
        raise ValueError(f"{path}: not a readable WAV file ({e})") from None
    if shape != (1, 2, SAMPLE_RATE):
        raise ValueError(f"{path}: {shape[0]} channel(s), {8 * shape[1]}-bit, {shape[2]} Hz; expected mono 16-bit "
                         f"{SAMPLE_RATE} Hz")
    return np.frombuffer(frames, "<i2").copy()


def normalize(text: str) -> str:
    """What the recognizer is scored on: lower case, letters, digits, apostrophes and single spaces;
    bracketed notes ("dollar [$]") and other punctuation go, hyphens and slashes become spaces."""
    text = re.sub(r"\[[^\]]*\]|<[^>]*>", " ", text.lower())
    text = re.sub(r"[-/]", " ", text)
    return " ".join(re.sub(r"[^a-z0-9' ]", "", text).split())


class AsteriskSounds(tfds.core.GeneratorBasedBuilder):
    """One record per spoken prompt: its name, raw transcript and samples; tones and prompts whose
    transcript has no words are left out."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "en_US_f_Allison, split 80/10/10 by split_key(name)."}

    def __init__(self, *, root: str | Path, **kwargs):
        self._root = Path(root)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description=__doc__, features=tfds.features.FeaturesDict({
            "name": tfds.features.Text(), "text": tfds.features.Text(),
            "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16)}))

    def _split_generators(self, dl_manager):
        splits: dict[str, list] = {"train": [], "validation": [], "test": []}
        for name, text in sorted(read_transcripts(self._root / TRANSCRIPTS).items()):
            wav = self._root / SOUNDS / f"{name}.wav"
            if not normalize(text) or not wav.is_file():
                continue
            record = {"name": name, "text": text, "audio": read_wav(wav)}
            splits[split_name(split_key("asterisk", name))].append((name, record))
        return splits

    def _generate_examples(self, *args, **kwargs):
        raise AssertionError("unused: _split_generators yields the examples")


def load(tfds_dir: str | Path, path: str = "") -> dict[str, list[dict]]:
    """Each split's records {name, text, audio (int16)} in name order, prepared once."""
    builder = AsteriskSounds(root=find_root(path), data_dir=str(Path(tfds_dir).expanduser()),
                             file_format="array_record")
    prepare.prepare(builder)
    return {split: [{"name": prepare.text(r["name"]), "text": prepare.text(r["text"]), "audio": r["audio"]}
                    for r in prepare.read_split(builder, split)] for split in ("train", "validation", "test")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["fetch"])
    parser.add_argument("--root", default=DEFAULT_ROOT, help="where to unpack the packages")
    args = parser.parse_args(argv)
    try:
        print(fetch(args.root))
    except (OSError, subprocess.CalledProcessError, ValueError) as e:
        sys.exit(f"could not fetch the Asterisk prompts: {e}")


if __name__ == "__main__":
    main()
