"""The checked-in crds/ are exactly what the models generate."""

from pathlib import Path

import yaml

from slime.crds import all_crds, file_name

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_checked_in_crds_match_the_models() -> None:
    generated = {file_name(obj): obj for obj in all_crds(builtin_only=True)}
    on_disk = {p.name: yaml.safe_load(p.read_text()) for p in CRDS.glob("*.yaml")}
    assert sorted(on_disk) == sorted(generated), "run `make crds`"
    for name, obj in generated.items():
        assert on_disk[name] == obj, f"crds/{name} drifted from the models: run `make crds`"


def test_every_kind_has_status_subresource_category_and_ready_column() -> None:
    for obj in all_crds():
        if obj["spec"]["group"] == "kopf.dev":
            continue
        version = obj["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        assert obj["spec"]["names"]["categories"] == ["slime"]
        assert any(c["name"] == "Ready" for c in version["additionalPrinterColumns"])
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
        assert {"observedGeneration", "conditions"} <= set(status)


def test_deploy_rbac_is_what_the_modules_declare() -> None:
    """deploy/slime.yaml's ClusterRole grants exactly the rules derived from the registry."""
    from slime import registry
    from slime.framework.rbac import rules_for

    docs = [d for d in yaml.safe_load_all((CRDS.parent / "deploy" / "slime.yaml").read_text()) if d]
    [role] = [d for d in docs if d["kind"] == "ClusterRole"]
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    modules = args[args.index("--modules") + 1].split(",")
    assert role["rules"] == rules_for([registry.get(m) for m in modules])
    assert not any(r["resources"] == ["clusterroles"] for r in role["rules"])  # writes no RBAC
    assert not any("*" in r["verbs"] or "*" in r["resources"] for r in role["rules"])


def _undescribed(node: object, path: str) -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        for key, child in (node.get("properties") or {}).items():
            if "description" not in child and f"{path}.{key}".count(".") > 1 or (
                    "description" not in child and key != "metadata"):
                out.append(f"{path}.{key}")
            out += _undescribed(child, f"{path}.{key}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                out += _undescribed(node[key], f"{path}[]")
    return out


def test_every_field_has_a_description_and_no_yaml_anchors() -> None:
    """`kubectl explain` shows something for every field; the files hold no &anchors/*aliases."""
    missing = []
    for obj in all_crds(builtin_only=True):
        if obj["spec"]["group"] == "kopf.dev":
            continue
        schema = obj["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        missing += _undescribed(schema, obj["spec"]["names"]["kind"])
    assert missing == []
    for path in CRDS.glob("*.yaml"):
        assert "&id" not in path.read_text() and "*id" not in path.read_text(), path.name
