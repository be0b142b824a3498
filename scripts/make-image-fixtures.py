#!/usr/bin/env python3
"""Writes the small images the attachment tests upload (tests/fixtures/images): photos with EXIF
GPS tags (which thumbnails must not keep), a sideways-oriented JPEG, a truncated JPEG, an animated
GIF and a WebP. Committed, so the tests need no image library; run again to remake them
(`pip install Pillow`)."""
import io
import pathlib

from PIL import Image, ImageDraw

out = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "images"
out.mkdir(parents=True, exist_ok=True)


def picture(width, height, colour):
    image = Image.new("RGB", (width, height), colour)
    draw = ImageDraw.Draw(image)
    for i in range(0, width, 40):
        draw.line([(i, 0), (width - i, height)], fill=(255 - colour[0], 90, 200), width=6)
    draw.ellipse([width // 4, height // 4, 3 * width // 4, 3 * height // 4], outline=(10, 10, 10), width=8)
    return image


def exif_with_gps(orientation=1):
    exif = Image.Exif()
    exif[0x0112] = orientation          # Orientation
    exif[0x010F] = "ParleyCam"          # Make
    gps = {1: "N", 2: (52.0, 22.0, 12.5), 3: "E", 4: (4.0, 53.0, 40.25)}  # GPSLatitude… (Amsterdam)
    exif[0x8825] = gps                  # GPSInfo IFD
    return exif


photo = picture(800, 600, (30, 120, 200))
buffer = io.BytesIO()
photo.save(buffer, "JPEG", quality=85, exif=exif_with_gps())
jpeg = buffer.getvalue()
(out / "gps.jpg").write_bytes(jpeg)
(out / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])

buffer = io.BytesIO()
photo.save(buffer, "JPEG", quality=85, exif=exif_with_gps(orientation=6))  # rotate 90° clockwise to show
(out / "sideways.jpg").write_bytes(buffer.getvalue())

buffer = io.BytesIO()
picture(640, 480, (200, 60, 40)).save(buffer, "PNG", exif=exif_with_gps())
(out / "gps.png").write_bytes(buffer.getvalue())

frames = [picture(300, 200, (i * 60, 100, 150)).convert("P") for i in range(3)]
buffer = io.BytesIO()
frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
(out / "animated.gif").write_bytes(buffer.getvalue())

buffer = io.BytesIO()
picture(500, 500, (90, 180, 60)).save(buffer, "WEBP", quality=70)
(out / "square.webp").write_bytes(buffer.getvalue())

for path in sorted(out.iterdir()):
    print(f"{path.name}: {path.stat().st_size} bytes")
