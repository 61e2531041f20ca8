"""Package layout only; all metadata lives in pyproject.toml.

`ohmygpu` is a namespace package spread over two trees: hand-written code in services/ and code
generated from proto/ in gen/. Each package is mapped to its own directory so imports follow the
proto path (`ohmygpu.runtime.v1.runtime_pb2`) while generated and hand-written code never mix.
"""

from setuptools import find_namespace_packages, setup

package_dir: dict[str, str] = {}
for root in ("services", "gen"):
    for name in find_namespace_packages(where=root, include=["ohmygpu.*"]):
        package_dir[name] = f"{root}/{name.replace('.', '/')}"

setup(packages=sorted(package_dir), package_dir=package_dir)
