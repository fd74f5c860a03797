"""Identity attributes and prompts: who each synthetic identity is, drawn from (run seed, identity index).

Each identity's attributes come from its own random stream (sha256 of run seed and index), so identity 7 is
the same whether a run makes 8 or 8,000 identities, in any order or shard. Gender is assigned per pair of
indices (one female, one male, order seeded), so any run prefix is balanced within one. Attributes are kept
as labels next to the prompt; the wording lives in templates a user can replace.
"""

from __future__ import annotations

import hashlib
import random
import string
from dataclasses import asdict, dataclass

from thermvision_db.errors import InputError

GENDERS = ("female", "male")
AGE_BANDS = ("18-25", "26-35", "36-45", "46-60", "61-75")
HAIRSTYLES = {
    "female": ("long straight hair", "long wavy hair", "shoulder-length hair", "a bob cut", "a ponytail",
               "a bun", "short hair", "curly hair"),
    "male": ("short hair", "a buzz cut", "a crew cut", "slicked-back hair", "curly hair", "medium-length hair",
             "a receding hairline", "a bald head"),
}
FACIAL_HAIR = ("none", "stubble", "full beard", "goatee", "moustache")  # men only; women always "none"
GLASSES = ("none", "glasses")
FACE_MASKS = ("none", "face mask")
EXPRESSIONS = ("neutral", "smile", "frown", "surprise")
CATEGORIES = ("frontal", "accessories", "beard", "mix", "head_pose")  # the paper's 2D image categories
HEAD_POSES = ("frontal", "turned left", "turned right", "looking up", "looking down")

EXPRESSION_PHRASES = {"neutral": "a neutral expression", "smile": "smiling", "frown": "frowning",
                      "surprise": "a surprised expression"}
POSE_PHRASES = {"frontal": "frontal view", "turned left": "head turned to the left",
                "turned right": "head turned to the right", "looking up": "head tilted up",
                "looking down": "head tilted down"}

DEFAULT_TEMPLATE = (
    "High quality thermal infrared face image of a {person} aged {age_band}, white-hot, {pose_phrase}, "
    "{hair_phrase}{facial_hair_phrase}{glasses_phrase}{mask_phrase}, {expression_phrase}, plain background"
)


@dataclass(frozen=True)
class IdentityAttributes:
    """The labels of one synthetic identity; `category` is the paper's 2D image category."""

    gender: str
    age_band: str
    hairstyle: str
    facial_hair: str
    glasses: str
    face_mask: str
    expression: str
    category: str
    head_pose: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class IdentityPrompt:
    """One identity: its index, the run seed it came from, its attributes and the prompt made from them."""

    index: int
    run_seed: int
    attributes: IdentityAttributes
    prompt: str  # CLIP-L text (and T5's too when `prompt_t5` is None, as diffusers' prompt_2=None)
    prompt_t5: str | None = None  # a separate T5 text, as ComfyUI's CLIPTextEncodeFlux takes


def derive_seed(run_seed: int, index: int, purpose: str) -> int:
    """A 63-bit seed from (run seed, index, purpose): independent streams, stable across Python versions."""
    data = f"thermvision-db|{purpose}|{int(run_seed)}|{int(index)}".encode()
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little") >> 1


def image_seed(run_seed: int, index: int) -> int:
    """The noise seed of identity `index`'s still; depends on nothing else (batch, shard, GPU count)."""
    return derive_seed(run_seed, index, "image")


def gender_for(run_seed: int, index: int) -> str:
    """Balanced gender: indices 2k and 2k+1 get one of each, which one first is seeded per pair."""
    first = random.Random(derive_seed(run_seed, index // 2, "gender-pair")).randrange(2)
    return GENDERS[(first + index) % 2]


def sample_attributes(run_seed: int, index: int) -> IdentityAttributes:
    """Draw identity `index`'s attributes; the category decides which attributes are forced or free."""
    rng = random.Random(derive_seed(run_seed, index, "attributes"))
    gender = gender_for(run_seed, index)
    categories = CATEGORIES if gender == "male" else tuple(c for c in CATEGORIES if c != "beard")
    category = rng.choice(categories)
    age_band = rng.choice(AGE_BANDS)
    hairstyle = rng.choice(HAIRSTYLES[gender])
    expression = rng.choice(EXPRESSIONS)
    facial_hair, glasses, face_mask, head_pose = "none", "none", "none", "frontal"
    if category == "accessories":
        glasses, face_mask = rng.choice([("glasses", "none"), ("none", "face mask"), ("glasses", "face mask")])
    elif category == "beard":
        facial_hair = rng.choice(FACIAL_HAIR[1:])
    elif category == "head_pose":
        head_pose = rng.choice(HEAD_POSES[1:])
    elif category == "mix":
        if gender == "male":
            facial_hair = rng.choice(FACIAL_HAIR)
        glasses = rng.choice(GLASSES)
        face_mask = "face mask" if rng.random() < 0.25 else "none"
        head_pose = rng.choice(HEAD_POSES)
    return IdentityAttributes(gender, age_band, hairstyle, facial_hair, glasses, face_mask, expression, category,
                              head_pose)


def template_fields(attributes: IdentityAttributes) -> dict[str, str]:
    """Everything a template may use: the raw labels plus ready-made phrases."""
    a = attributes
    fields = a.to_dict()
    fields.update(
        person="woman" if a.gender == "female" else "man",
        hair_phrase=f"with {a.hairstyle}",
        facial_hair_phrase="" if a.facial_hair == "none" else f", {a.facial_hair}",
        glasses_phrase="" if a.glasses == "none" else ", wearing glasses",
        mask_phrase="" if a.face_mask == "none" else ", wearing a face mask",
        expression_phrase=EXPRESSION_PHRASES[a.expression],
        pose_phrase=POSE_PHRASES[a.head_pose],
    )
    return fields


TEMPLATE_FIELDS = tuple(template_fields(IdentityAttributes(*(["female", "18-25", "x", "none", "none", "none",
                                                              "neutral", "frontal", "frontal"]))))


MAX_TEMPLATE_CHARS = 2000  # CLIP reads 77 tokens and T5 256-512: a longer template is a mistake, not a prompt


def _longest_field() -> int:
    values = [v for group in (AGE_BANDS, FACIAL_HAIR, GLASSES, FACE_MASKS, EXPRESSIONS, CATEGORIES, HEAD_POSES,
                              *HAIRSTYLES.values(), EXPRESSION_PHRASES.values(), POSE_PHRASES.values()) for v in group]
    return max(len(v) for v in values) + len("with , wearing a face mask")


MAX_PROMPT_CHARS = MAX_TEMPLATE_CHARS * (1 + _longest_field())  # the bound every rendered prompt stays under


def check_template(template: str) -> str:
    """A template of plain `{field}` names only: no format spec (`{person:>1000000000}` would render gigabytes),
    no conversion (`!r`), no attribute or index access, at most MAX_TEMPLATE_CHARS long, so the rendered prompt
    is bounded before any work starts."""
    if not isinstance(template, str):
        raise InputError(f"prompt template must be text, got {type(template).__name__}")
    if len(template) > MAX_TEMPLATE_CHARS:
        raise InputError(f"prompt template is {len(template):,} characters long; at most {MAX_TEMPLATE_CHARS:,} "
                         "are allowed (CLIP reads 77 tokens, T5 256)")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise InputError(f"prompt template {template[:80]!r} is malformed: {err}") from err
    names = [name for _, name, _, _ in parsed if name is not None]
    unknown = sorted({n for n in names if n not in TEMPLATE_FIELDS})
    if unknown or any(n == "" or n.isdigit() for n in names):
        raise InputError(
            f"prompt template uses unknown field(s) {unknown or names}; available: {', '.join(TEMPLATE_FIELDS)}"
        )
    styled = [f"{{{name}{'!' + conv if conv else ''}{':' + spec if spec else ''}}}"
              for _, name, spec, conv in parsed if name is not None and (spec or conv)]
    if styled:
        raise InputError(f"prompt template field {styled[0][:60]!r} has a format spec or conversion; only plain "
                         "{field} names are allowed")
    return template


def render_prompt(attributes: IdentityAttributes, template: str | None = None) -> str:
    return check_template(template or DEFAULT_TEMPLATE).format_map(template_fields(attributes))


def sample_identity(run_seed: int, index: int, template: str | None = None,
                    template_t5: str | None = None) -> IdentityPrompt:
    """Identity `index` of the run `run_seed`: attributes (labels) and the prompt rendered from `template`
    (CLIP-L; also T5 unless `template_t5` gives T5 its own text). A template without fields is a fixed text,
    e.g. the paper's workflow: CLIP-L "Hihh quality thermal male and female face data.", T5 "surprice face "."""
    if index < 0:
        raise InputError(f"identity index must be >= 0, got {index}")
    attributes = sample_attributes(run_seed, index)
    return IdentityPrompt(index=index, run_seed=run_seed, attributes=attributes,
                          prompt=render_prompt(attributes, template),
                          prompt_t5=None if template_t5 is None else render_prompt(attributes, template_t5))
