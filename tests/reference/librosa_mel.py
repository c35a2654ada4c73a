#!/usr/bin/env python3
"""Reference mel power spectrogram for the transcoder's parity test.

Reads mono float32 samples (raw little-endian), runs
librosa.feature.melspectrogram with the given parameters and writes the mel
power as raw little-endian float32, time-major (frames x n_mels), the layout
deepcuts uses. Prints one JSON line describing what it did.
"""

import argparse
import json
import sys

import numpy as np

try:
    import librosa
except ImportError as err:  # the Rust test turns this into a failure
    sys.exit(f"librosa is not installed in this environment: {err}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", required=True, help="raw f32 LE mono samples")
    parser.add_argument("--output", required=True, help="raw f32 LE mel power, frames x n_mels")
    parser.add_argument("--sr", type=int, default=22050)
    parser.add_argument("--n-fft", type=int, default=2048)
    parser.add_argument("--hop-length", type=int, default=441)
    parser.add_argument("--n-mels", type=int, default=128)
    parser.add_argument("--fmin", type=float, default=0.0)
    parser.add_argument("--fmax", type=float, default=None)
    parser.add_argument("--pad-mode", default=None,
                        help="override librosa's default pad_mode (left as is when omitted)")
    args = parser.parse_args()

    y = np.fromfile(args.input, dtype="<f4")
    kwargs = dict(
        y=y,
        sr=args.sr,
        n_fft=args.n_fft,
        hop_length=args.hop_length,
        n_mels=args.n_mels,
        fmin=args.fmin,
        fmax=args.fmax,
        power=2.0,
    )
    if args.pad_mode is not None:
        kwargs["pad_mode"] = args.pad_mode
    mel = librosa.feature.melspectrogram(**kwargs)
    mel.T.astype("<f4").tofile(args.output)

    import inspect
    default_pad = inspect.signature(librosa.feature.melspectrogram).parameters["pad_mode"].default
    print(json.dumps({
        "librosa": librosa.__version__,
        "numpy": np.__version__,
        "frames": int(mel.shape[1]),
        "n_mels": int(mel.shape[0]),
        "default_pad_mode": default_pad,
        "samples": int(y.shape[0]),
    }))


if __name__ == "__main__":
    main()
