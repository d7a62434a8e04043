"""The sandbox image, built with no registry: Debian packages, rootfs, `docker import`, runner.

Two layers, each tagged by the hash of what it is made from, so `make image` is a no-op when
nothing changed and a changed runner can never be paired with a stale image:
- `fnforge-base:<hash>`: mmdebstrap of images/packages.txt (cached tarball in the user cache);
- `fnforge-sandbox:<hash>`: images/Dockerfile + sandbox/runner + RestrictedPython, built offline.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import docker.errors
from docker.models.images import Image

from .errors import ImageMissing, SandboxError, engine_errors
from .packages import PACKAGES_FILE, image_packages
from .paths import cache_dir

__all__ = [
    "BASE_REPO",
    "DOCKERFILE",
    "IMAGES_DIR",
    "IMAGE_REPO",
    "LABEL",
    "RUNNER_DIR",
    "SUITE",
    "base_tag",
    "build_image",
    "find_image",
    "image_tag",
]


IMAGES_DIR = Path(__file__).resolve().parent.parent / "images"
RUNNER_DIR = Path(__file__).resolve().parent / "runner"
DOCKERFILE = IMAGES_DIR / "Dockerfile"
SUITE = "bookworm"
BASE_REPO = "fnforge-base"
IMAGE_REPO = "fnforge-sandbox"
LABEL = "fnforge"

# Trimmed from the root filesystem: documentation, package manager state, test suites.
_DPKG_EXCLUDES = ["/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*",
                  "/usr/share/info/*", "/usr/share/lintian/*"]
_TRIM_HOOK = (
    'rm -rf "$1"/var/cache/* "$1"/var/lib/apt/lists/* "$1"/var/log/* '
    '"$1"/usr/lib/python3.11/test "$1"/usr/lib/python3.11/idlelib '
    '"$1"/usr/lib/python3.11/ensurepip "$1"/usr/lib/python3.11/lib2to3; '
    'find "$1"/usr/lib/python3/dist-packages -type d -name tests -prune -exec rm -rf {} +; '
    'chroot "$1" dpkg-query -W -f "\\${Package}=\\${Version}\\n" > "$1"/etc/fnforge-packages.txt'
)


def _restrictedpython_dir() -> Path:
    spec = importlib.util.find_spec("RestrictedPython")
    if spec is None or not spec.submodule_search_locations:
        raise SandboxError("RestrictedPython is not installed on the host: run `make install`")
    return Path(next(iter(spec.submodule_search_locations)))


def _files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            yield path


def base_tag() -> str:
    digest = hashlib.sha256()
    digest.update(PACKAGES_FILE.read_bytes())
    digest.update(repr((SUITE, _DPKG_EXCLUDES, _TRIM_HOOK)).encode())
    return f"{BASE_REPO}:{digest.hexdigest()[:16]}"


def image_tag() -> str:
    """Content tag of the sandbox image: base, Dockerfile, runner and RestrictedPython sources."""
    digest = hashlib.sha256(base_tag().encode())
    digest.update(DOCKERFILE.read_bytes())
    for root in (RUNNER_DIR, _restrictedpython_dir()):
        for path in _files(root):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return f"{IMAGE_REPO}:{digest.hexdigest()[:16]}"


def find_image(client: docker.DockerClient) -> Image:
    """The image matching this checkout's sources; ImageMissing says how to build it."""
    tag = image_tag()
    try:
        with engine_errors(f"look up the image {tag}"):
            return client.images.get(tag)
    except ImageMissing:
        raise ImageMissing(f"sandbox image {tag} is not built on this engine: run `make image`"
                           " (or `python -m sandbox image`)") from None


def _bootstrap_rootfs(tarball: Path, log: Callable[[str], None]) -> None:
    if shutil.which("mmdebstrap") is None:
        raise SandboxError("mmdebstrap is not installed: run `apt-get install -y mmdebstrap`"
                           " (the Makefile's `image` target does this)")
    include = ",".join(f"{p.name}={p.version}" for p in image_packages().packages)
    partial = tarball.with_suffix(".partial.tar")  # mmdebstrap picks the format by suffix
    command = ["mmdebstrap", "--variant=essential", f"--include={include}",
               *[f"--dpkgopt=path-exclude={glob}" for glob in _DPKG_EXCLUDES],
               f"--customize-hook={_TRIM_HOOK}", SUITE, str(partial)]
    log(f"bootstrapping Debian {SUITE} from packages (about a minute)...")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise SandboxError("mmdebstrap failed:\n" + result.stderr[-4000:])
    partial.rename(tarball)  # atomic: an interrupted build never leaves a half tarball behind


def build_image(client: docker.DockerClient | None = None,
                log: Callable[[str], None] = print) -> Image:
    """Build what is missing, on `client`'s engine (default: the one `connect()` finds);
    idempotent and quick when nothing changed. Engine failures are EngineError."""
    if client is None:
        from .container import connect

        client = connect()
    with engine_errors("build the sandbox image"):
        return _build(client, log)


def _build(client: docker.DockerClient, log: Callable[[str], None]) -> Image:
    tag = image_tag()
    try:
        image = client.images.get(tag)
        log(f"{tag} is up to date ({image.id})")
        return image
    except docker.errors.ImageNotFound:
        pass
    base = base_tag()
    try:
        client.images.get(base)
    except docker.errors.ImageNotFound:
        tarball = cache_dir() / f"rootfs-{base.split(':')[1]}.tar"
        if not tarball.exists():
            _bootstrap_rootfs(tarball, log)
        log(f"importing {tarball.name} as {base}")
        repo, version = base.split(":")
        client.api.import_image_from_file(str(tarball), repository=repo, tag=version)
    log(f"building {tag}")
    with tempfile.TemporaryDirectory(prefix="fnforge-image-") as tmp:
        context = Path(tmp)
        shutil.copy(DOCKERFILE, context / "Dockerfile")
        shutil.copytree(RUNNER_DIR, context / "runner",
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(_restrictedpython_dir(), context / "lib" / "RestrictedPython",
                        ignore=shutil.ignore_patterns("__pycache__", "tests"))
        try:
            image, _ = client.images.build(
                path=str(context), tag=tag, buildargs={"BASE": base}, network_mode="none",
                rm=True, forcerm=True, pull=False, labels={LABEL: "image"})
        except docker.errors.BuildError as exc:
            detail = "".join(str(c.get("stream", c.get("error", ""))) for c in exc.build_log)
            raise SandboxError(f"building {tag} failed: {exc.msg}\n{detail[-4000:]}") from None
    log(f"built {tag} ({image.id})")
    # Earlier builds of this image lost their tag to the new one: drop them.
    client.images.prune(filters={"dangling": True, "label": f"{LABEL}=image"})
    return image
