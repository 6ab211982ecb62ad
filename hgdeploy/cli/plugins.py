"""`hgdeploy plugins`: the corner-pool TensorRT plugins, their implementations and what they need.

Works without TensorRT or Triton (it only describes), so users can check a machine before
building an engine.
"""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from hgdeploy.base.console import console


@click.command("plugins")
def plugins_command() -> None:
    """List the corner-pool TensorRT plugins and whether TensorRT is usable here."""
    from hgdeploy.plugins.tensorrt_plugins import describe_plugins

    plugins = describe_plugins()
    console.print(_table(plugins))
    for line in _footer(plugins):
        console.print(line)


def _table(plugins: list[dict[str, Any]]) -> Table:
    table = Table(title="hgdeploy TensorRT plugins (corner pooling)")
    for column in ("plugin", "ver", "ONNX op", "dtypes", "format", "impl"):
        table.add_column(column, no_wrap=column in ("plugin", "ONNX op"))
    for plugin in plugins:
        table.add_row(
            plugin["name"],
            plugin["version"],
            plugin["op_type"],
            ", ".join(plugin["dtypes"]),
            ", ".join(plugin["formats"]),
            ", ".join(impl.upper() for impl in plugin["implementations"]),
        )
    return table


def _footer(plugins: list[dict[str, Any]]) -> list[str]:
    """Where things stand on this machine, and how a node picks its implementation."""
    from hgdeploy.plugins.tensorrt_plugins import AOT_ATTRIBUTE

    first = plugins[0]
    if first["tensorrt_importable"]:
        trt = f"TensorRT {first['tensorrt_version']} is importable here."
    else:
        trt = "TensorRT is not installed here: plugins register only where TensorRT 11 is."
    triton = "Triton is installed." if first["triton_installed"] else "Triton is not installed."
    impls = first["implementations"]
    archs = ", ".join(f"sm_{arch}" for arch in impls["aot"]["archs"])
    return [
        f"{trt} {triton}",
        f"AOT compiles for {archs}; it needs {impls['aot']['needs']}.",
        f"JIT needs {impls['jit']['needs']}.",
        f"ONNX node attribute {AOT_ATTRIBUTE}=1 (INT) builds the AOT kernel, {AOT_ATTRIBUTE}=0 "
        "the JIT one.",
    ]
