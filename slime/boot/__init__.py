"""slime-boot: a SlimeBoot deploys slime modules, as upstream's helm-operator did.

Follow one SlimeBoot: ``api.py`` (the model and the CRD's schema), ``context.py`` (the boot config,
every module's RBAC rules from ``Settings.catalog``, existing namespaces, the installed CRD),
``plan.py`` (what to deploy, as data, every problem naming its field), ``render.py`` and
``templates/`` (the objects, through Jinja2), ``controller.py`` (operator only: the CRD check at
start-up, wake rules).
"""

from slime.boot.api import SLIME_BOOT
from slime.boot.config import BootConfig
from slime.boot.context import context
from slime.boot.render import WRITES, render
from slime.framework.kinds import NAMESPACE
from slime.framework.module import Module

MODULE = Module(
    name="boot",
    kinds=(SLIME_BOOT,),
    config=BootConfig,
    context=context,
    render=render,
    reads=(NAMESPACE,),
    writes=WRITES,
    hooks="slime.boot.controller:BootHooks",
    description="SlimeBoot -> module Deployments, config, RBAC and Services",
)
