"""benchmarks.device_env: the distributions a lent machine's image lacks are the closure of crobust's requirements
minus the image (checked on a small graph against the set worked out by hand, and on the real pyproject), and the
requirement check names what is absent or at a refused version."""

import pytest
from packaging.requirements import Requirement

from benchmarks import device_env

# name -> requirement strings, as importlib.metadata.requires returns them
GRAPH = {
    "a": ["img", "d", "e; python_version < '3.9'", "f; extra == 'opt'", "w; platform_system == 'Windows'"],
    "b": ["g; extra == 'x'", "h; extra == 'y'"],
    "d": ["a"],                      # a cycle back to a root
    "f": [], "g": [], "e": [], "h": [], "w": [],
    "img": ["zz"],                   # inside the image: never walked
}


def _carry(graph):
    return device_env.carry_set([Requirement(r) for r in ("a", "b[x]", "c; python_version < '3.9'")],
                                requires=graph.get, version=lambda n: "1.0", image=frozenset({"img"}))


def test_the_closure_follows_markers_extras_and_stops_at_the_image():
    # e: python < 3.9 on a 3.12 target; f: extra 'opt' nobody asks for; h: extra 'y'; w: Windows; c: root for
    # python < 3.9; img and what it needs: the image's own.
    assert _carry(GRAPH) == {"a": "1.0", "b": "1.0", "d": "1.0", "g": "1.0"}


def test_a_distribution_reached_again_with_an_extra_is_walked_for_that_extra():
    graph = {**GRAPH, "d": ["a[opt]"]}
    assert _carry(graph) == {"a": "1.0", "b": "1.0", "d": "1.0", "f": "1.0", "g": "1.0"}


def test_the_real_closure_covers_every_requirement_the_image_lacks():
    carried = device_env.carry_for_target()
    assert {"tensorflow-datasets", "importlib-resources"} <= set(carried)
    assert not set(carried) & device_env.IMAGE
    for req in device_env.project_requirements():
        name = device_env.canonicalize_name(req.name)
        assert name in device_env.IMAGE or name in carried, name


def test_the_requirement_check_names_absent_and_refused_versions_only():
    reqs = [Requirement(r) for r in ("crobust-surely-absent-pkg", "numpy<1", "numpy>=1",
                                     "crobust-other-absent; python_version < '3'")]
    problems = device_env.unsatisfied(reqs)
    assert len(problems) == 2
    assert problems[0] == "crobust-surely-absent-pkg (absent)"
    assert problems[1].startswith("numpy (") and "needs <1" in problems[1]
    assert device_env.unsatisfied(device_env.project_requirements()) == []


@pytest.mark.parametrize("wheel, ok", [
    ("dm_tree-0.1.10-cp312-cp312-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl", True),
    ("toml-0.10.2-py2.py3-none-any.whl", True),
    ("x-1.0-cp310-abi3-manylinux_2_17_x86_64.whl", True),
    ("dm_tree-0.1.10-cp311-cp311-manylinux_2_17_x86_64.whl", False),
    ("x-1.0-cp312-cp312-macosx_11_0_arm64.whl", False),
    ("x-1.0-cp312-cp312-manylinux_2_17_aarch64.whl", False),
])
def test_a_wheel_is_accepted_only_for_cpython_312_on_linux_x86_64(wheel, ok):
    assert device_env.installs_on_target(wheel) is ok
