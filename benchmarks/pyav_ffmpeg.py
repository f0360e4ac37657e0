"""Let TorchCodec load the FFmpeg that PyAV's wheel bundles, on a machine without system FFmpeg.

    export LD_LIBRARY_PATH=$(python benchmarks/pyav_ffmpeg.py /tmp/pyav_ffmpeg):$LD_LIBRARY_PATH

TorchCodec links FFmpeg's libraries by their standard names (``libavcodec.so.62`` for FFmpeg 8);
PyAV's wheel carries the same libraries renamed (``av.libs/libavcodec-<hash>.so.62.x``). This
makes a folder of links with the standard names pointing at PyAV's files and prints the
``LD_LIBRARY_PATH`` entries that make the dynamic loader find them (the folder, then av.libs for
their own dependencies). For the GPU machine, where nothing can be installed from the network
(benchmarks/gpu_suite.sh); with Debian's FFmpeg packages installed (``.ci/run``) it is not needed.
Checked on the CPU: TorchCodec then loads its FFmpeg-8 core from PyAV's libraries and its frames
equal PyAV's (tests/test_data_decode.py passes under it).
"""

from __future__ import annotations

import os
import re
import sys


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/pyav_ffmpeg"
    import av

    libs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(av.__file__))), "av.libs")
    if not os.path.isdir(libs):
        sys.exit(f"{libs}: not found (a PyAV built against system FFmpeg needs none of this)")
    os.makedirs(out, exist_ok=True)
    pattern = re.compile(r"^(libav\w+|libsw\w+|libpostproc)-[0-9a-f]+\.so\.(\d+)")
    made = 0
    for name in sorted(os.listdir(libs)):
        m = pattern.match(name)
        if m:
            link = os.path.join(out, f"{m.group(1)}.so.{m.group(2)}")
            if os.path.lexists(link):
                os.remove(link)
            os.symlink(os.path.join(libs, name), link)
            made += 1
    if not made:
        sys.exit(f"{libs}: no FFmpeg libraries in it")
    print(f"{out}:{libs}")


if __name__ == "__main__":
    main()
