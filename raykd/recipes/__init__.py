"""The bundled recipes, package data: one recipe per method (`<method>.yaml`, the method jobs'
defaults), sweep spaces (`spaces/`) and teacher specs (`teachers/`), and recipe families in
folders of their own: `msmarco/` holds the seed papers' MS MARCO settings (`msmarco/prod`).

They travel inside the package, so a checkout and an installed wheel find them alike. Each
method recipe opens with a one-line `# ...` summary, which `raykd --help` shows.

Where a command takes one of these files (`--recipe`, `--space`, `--teacher`), it takes a path
or the bundled file's bare name (`ckl`, `ckl_scifact`, `bm25_contrastive`; a family's recipe
as `msmarco/ckl`): `bundled_file`.
"""

from __future__ import annotations

from pathlib import Path

from raykd.errors import ConfigError

RECIPES_DIR = Path(__file__).resolve().parent
KINDS = {"recipe": RECIPES_DIR, "space": RECIPES_DIR / "spaces",
         "teacher": RECIPES_DIR / "teachers"}
FAMILIES = ("msmarco",)  # folders of recipes: `raykd run msmarco/margin_mse`


def bundled_names(kind: str = "recipe") -> list[str]:
    """The bare names of the bundled files of a kind (for recipes: the methods), sorted."""
    return sorted(p.stem for p in KINDS[kind].glob("*.yaml"))


def family_names(family: str | None = None) -> list[str]:
    """The recipes of one family (or of every family) as `family/name`, sorted."""
    families = FAMILIES if family is None else (family,)
    return sorted(f"{f}/{p.stem}" for f in families for p in (RECIPES_DIR / f).glob("*.yaml"))


def recipe_names() -> list[str]:
    """Every bundled recipe `raykd run` takes: the methods, then the families' recipes."""
    return [*bundled_names("recipe"), *family_names()]


def bundled_path(name: str, kind: str = "recipe") -> Path:
    """Where the bundled file `name` of a kind is (whether or not it exists)."""
    return KINDS[kind] / f"{name}.yaml"


def bundled_file(value: str | Path, kind: str = "recipe") -> Path | None:
    """`value` as a file: the path itself when it is a file; else, for a bare name (`ckl` or
    `ckl.yaml`, no folder), the bundled file of that name; else a path relative to the folder
    that holds the raykd package (`raykd/recipes/ckl.yaml` from any working directory). None
    when none of these is a file."""
    path = Path(value)
    if path.is_file():
        return path
    family = kind == "recipe" and len(path.parts) == 2 and path.parts[0] in FAMILIES
    if len(path.parts) == 1 or family:
        stem = path.name[:-5] if path.name.endswith(".yaml") else path.name
        name = f"{path.parts[0]}/{stem}" if family else stem
        if bundled_path(name, kind).is_file():
            return bundled_path(name, kind)
    if not path.is_absolute() and (RECIPES_DIR.parents[1] / path).is_file():
        return RECIPES_DIR.parents[1] / path
    return None


def require_file(value: str | Path, kind: str, field: str) -> Path:
    """`bundled_file`, or a ConfigError naming `field`, the value and the bundled names."""
    found = bundled_file(value, kind)
    if found is None:
        raise ConfigError(field, f"{value}: no such {kind} file (bundled {kind}s: "
                                 f"{', '.join(bundled_names(kind))})")
    return found


def summary(name: str) -> str:
    """A method recipe's one-line summary: its first line, a `#` comment."""
    with bundled_path(name).open(encoding="utf-8") as f:
        first = f.readline().strip()
    return first.lstrip("#").strip() if first.startswith("#") else ""
