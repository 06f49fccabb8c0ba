"""SmartLimiter's identity as a Kubernetes kind (upstream's group, version, names)."""

from slime.framework.crdinfo import AGE_COLUMN, READY_COLUMN, CrdInfo
from slime.modules.limiter.api import GROUP, KIND, PLURAL, VERSION, SmartLimiterSpec, SmartLimiterStatus

SMART_LIMITER = CrdInfo(
    group=GROUP,
    version=VERSION,
    kind=KIND,
    plural=PLURAL,
    singular="smartlimiter",
    short_names=("sml",),
    spec=SmartLimiterSpec,
    status=SmartLimiterStatus,
    printer_columns=(
        READY_COLUMN,
        {"name": "Metrics", "type": "string", "jsonPath": '.status.conditions[?(@.type=="MetricsAvailable")].status',
         "description": "Whether the metrics the expressions need could be read"},
        AGE_COLUMN,
    ),
)
