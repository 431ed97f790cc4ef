"""Provenance evidence read from an image's original bytes: C2PA Content Credentials (offline), IPTC digital
source types, and the metadata that image generators and editors leave behind.

    from backend.provenance import read_provenance
    provenance = read_provenance(data, trust_anchors_pem=pem)
    provenance.to_dict()             # {"c2pa": {...} | None, "signals": [{"kind", "says", "detail", "source"}]}
    provenance.declares_ai           # verdict rule 2 (docs/architecture.md)
    provenance.invalid_manifest_claims_ai
    provenance.trusted_capture       # rule 4

See docs/provenance.md for what this proves and what it does not.

May import core/ and backend.settings.
"""

from backend.provenance.c2pa_evidence import check_trust_anchors
from backend.provenance.errors import InputTooLarge, TrustAnchorsError
from backend.provenance.evidence import C2paEvidence, Provenance, Says, Signal, SourceType
from backend.provenance.limits import ProvenanceLimits
from backend.provenance.reader import read_provenance

__all__ = ["C2paEvidence", "InputTooLarge", "Provenance", "ProvenanceLimits", "Says", "Signal", "SourceType",
           "TrustAnchorsError", "check_trust_anchors", "read_provenance"]
