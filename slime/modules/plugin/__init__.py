"""The plugin module: PluginManager (HTTP filters) and EnvoyPlugin (per-route filter config)
become one EnvoyFilter each."""

from __future__ import annotations

from slime.framework.kinds import ENVOY_FILTER, SECRET
from slime.framework.module import Module
from slime.modules.plugin.api import KINDS
from slime.modules.plugin.config import PluginModule
from slime.modules.plugin.context import plugin_context
from slime.modules.plugin.render import render

MODULE = Module(
    name="plugin",
    kinds=KINDS,
    config=PluginModule,
    context=plugin_context,
    render=render,
    reads=(SECRET,),
    writes=(ENVOY_FILTER,),
    description="PluginManager and EnvoyPlugin: Envoy HTTP filters and per-route settings as EnvoyFilters",
)
