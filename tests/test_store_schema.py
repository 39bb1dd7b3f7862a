import json

import pytest
from conftest import LENGTHS

from a4g.errors import StoreError
from a4g.store.fake import make_schema
from a4g.store.schema import FORMAT_VERSION, SchemaError, StoreSchema, compatible


def test_json_round_trip_keeps_fingerprint():
    schema = make_schema(LENGTHS)
    data = json.loads(json.dumps(schema.to_json_dict()))
    again = StoreSchema.from_json_dict(data)
    assert again == schema
    assert again.fingerprint == schema.fingerprint == data["fingerprint"]


def test_fingerprint_ignores_location_and_time_but_not_content():
    a = make_schema(LENGTHS, root="/mnt/a")
    b = make_schema(LENGTHS, root="/mnt/b").model_copy(update={"created": "2026-01-01", "code_version": "9"})
    assert a.fingerprint == b.fingerprint
    assert make_schema(LENGTHS, size=64).fingerprint != a.fingerprint
    assert make_schema(LENGTHS, flip=True).fingerprint != a.fingerprint
    assert make_schema({**LENGTHS, "v3": 1}).fingerprint != a.fingerprint


def _bad_version(data: dict) -> None:
    data["format_version"] = FORMAT_VERSION + 1


def _bad_size(data: dict) -> None:
    data.pop("fingerprint")
    data["preprocess"]["size"] = -3


def _edited(data: dict) -> None:
    data["vae"]["scaling_factor"] = 1.0  # fingerprint kept: the schema was edited after writing


@pytest.mark.parametrize(
    "damage, message",
    [(_bad_size, r"preprocess\.size"), (_bad_version, "format_version"), (_edited, "fingerprint mismatch")],
)
def test_from_json_refuses_with_the_field_named(damage, message):
    data = make_schema(LENGTHS).to_json_dict()
    damage(data)
    with pytest.raises(SchemaError, match=message):
        StoreSchema.from_json_dict(data)
    assert issubclass(SchemaError, StoreError)  # reported by the CLI as one `error:` line


def test_slices_must_match_encoders():
    schema = make_schema(LENGTHS)
    data = schema.model_dump()
    data["fusion"]["slices"]["enc_b"] = (32, 40)
    with pytest.raises(ValueError, match="fusion.slices"):
        StoreSchema.model_validate(data)


def test_channel_chunk_must_divide_boundaries():
    data = make_schema(LENGTHS).model_dump()
    data["layout"]["target_channel_chunk"] = 12
    with pytest.raises(ValueError, match="target_channel_chunk"):
        StoreSchema.model_validate(data)


def test_compatible_lists_each_mismatch():
    schema = make_schema(LENGTHS)
    assert compatible(schema, {"token_grid": (2, 2), "encoders": ["enc_b"], "vae.latent_channels": 4}) == []
    found = compatible(
        schema,
        {"token_grid": (16, 16), "encoders": ["enc_a", "dinov2_vitb14"], "flip": True, "preprocess.size": 32},
    )
    assert [m.field for m in found] == ["token_grid", "encoders", "flip"]
    assert "16" in str(found[0]) and "dinov2_vitb14" in str(found[1])
    with pytest.raises(KeyError, match="nope"):
        compatible(schema, {"nope": 1})


def test_bytes_per_frame():
    s = make_schema(LENGTHS)  # latents 2*4*4*4, targets 4 tokens * 48 channels, fp16
    assert s.bytes_per_frame() == (2 * 4 * 4 * 4 + 4 * 48) * 2
    assert make_schema(LENGTHS, flip=True).bytes_per_frame() == 2 * s.bytes_per_frame()
