import json

from utkface_core.cli import main


def test_index_json_reports_the_folder(utk_folder, capsys):
    assert main(["index", str(utk_folder), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["files"] == 20
    assert out["rejected"][0]["reason"].startswith("no race field")


def test_index_text_names_rejections(utk_folder, capsys):
    assert main(["index", str(utk_folder)]) == 0
    assert "REJECTED 39_1_20170116174525125.jpg.chip.jpg" in capsys.readouterr().out


def test_index_of_missing_folder_exits_2_with_a_message(tmp_path, capsys):
    assert main(["index", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
