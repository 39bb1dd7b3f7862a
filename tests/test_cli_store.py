import json

from conftest import shard_data
from typer.testing import CliRunner

from a4g.cli import app

runner = CliRunner()


def test_store_info_missing_store_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["store", "info", str(tmp_path / "missing"), "--json"])
    assert result.exit_code != 0
    assert "no store at" in result.output and "does not exist" in result.output


def test_store_info_json_and_verify(empty_store):
    result = runner.invoke(app, ["store", "info", empty_store.path, "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["fingerprint"] == empty_store.schema.fingerprint
    assert (info["frames"], info["shards_done"], info["shards_total"]) == (14, 0, 4)
    assert [e["name"] for e in info["encoders"]] == ["enc_a", "enc_b"]

    result = runner.invoke(app, ["store", "verify", empty_store.path])
    assert result.exit_code == 1 and "not done" in result.output

    for i in range(empty_store.num_shards):
        empty_store.write_shard(i, shard_data(empty_store, i))
    result = runner.invoke(app, ["store", "verify", empty_store.path])
    assert result.exit_code == 0 and result.output.startswith("OK")
    text = runner.invoke(app, ["store", "info", empty_store.path]).output
    assert "4/4 done" in text and "random-init" in text
