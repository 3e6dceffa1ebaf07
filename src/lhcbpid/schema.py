"""Column names and order, class names and order, the -999 sentinel, and subdetector groups."""

from __future__ import annotations

LABEL = "Label"
ID = "ID"
SENTINEL = -999.0

#: Columns of training.csv.gz, exactly in the file's order (``Label`` included).
TRAINING_COLUMNS: tuple[str, ...] = (
    "TrackP", "TrackNDoFSubdetector2", "BremDLLbeElectron", "MuonLooseFlag", "FlagSpd", "SpdE",
    "EcalDLLbeElectron", "DLLmuon", "RICHpFlagElectron", "EcalDLLbeMuon",
    "TrackQualitySubdetector2", "FlagPrs", "DLLelectron", "DLLkaon", "EcalE",
    "TrackQualityPerNDoF", "DLLproton", "PrsDLLbeElectron", "FlagRICH1", "MuonLLbeBCK", "FlagHcal",
    "EcalShowerLongitudinalParameter", "Calo2dFitQuality", "TrackPt", "TrackDistanceToZ",
    "RICHpFlagPion", "HcalDLLbeElectron", "Calo3dFitQuality", "FlagEcal", "MuonLLbeMuon",
    "TrackNDoFSubdetector1", "RICHpFlagProton", "RICHpFlagKaon", "GhostProbability",
    "TrackQualitySubdetector1", "Label", "RICH_DLLbeBCK", "FlagRICH2", "FlagBrem", "HcalDLLbeMuon",
    "TrackNDoF", "RICHpFlagMuon", "RICH_DLLbeKaon", "RICH_DLLbeElectron", "HcalE", "MuonFlag",
    "FlagMuon", "PrsE", "RICH_DLLbeMuon", "RICH_DLLbeProton",
)

#: The 49 model inputs: the training file's order with ``Label`` removed.
FEATURES: tuple[str, ...] = tuple(c for c in TRAINING_COLUMNS if c != LABEL)

#: Columns of test.csv.gz: the 49 features, then ``ID`` last.
TEST_COLUMNS: tuple[str, ...] = FEATURES + (ID,)

#: Class names in the model's output order, everywhere.
CLASSES: tuple[str, ...] = ("Electron", "Ghost", "Kaon", "Muon", "Pion", "Proton")

#: Features by subdetector.
GROUPS: dict[str, tuple[str, ...]] = {
    "tracking": (
        "TrackP", "TrackPt", "TrackNDoF", "TrackNDoFSubdetector1", "TrackNDoFSubdetector2",
        "TrackQualitySubdetector1", "TrackQualitySubdetector2", "TrackQualityPerNDoF",
        "TrackDistanceToZ", "GhostProbability",
    ),
    "rich": (
        "FlagRICH1", "FlagRICH2", "RICHpFlagElectron", "RICHpFlagMuon", "RICHpFlagPion",
        "RICHpFlagKaon", "RICHpFlagProton", "RICH_DLLbeElectron", "RICH_DLLbeMuon",
        "RICH_DLLbeKaon", "RICH_DLLbeProton", "RICH_DLLbeBCK",
    ),
    "spd": ("FlagSpd", "SpdE"),
    "prs": ("FlagPrs", "PrsE", "PrsDLLbeElectron"),
    "ecal": (
        "FlagEcal", "EcalE", "EcalDLLbeElectron", "EcalDLLbeMuon",
        "EcalShowerLongitudinalParameter", "Calo2dFitQuality", "Calo3dFitQuality",
    ),
    "hcal": ("FlagHcal", "HcalE", "HcalDLLbeElectron", "HcalDLLbeMuon"),
    "brem": ("FlagBrem", "BremDLLbeElectron"),
    "muon": ("FlagMuon", "MuonFlag", "MuonLooseFlag", "MuonLLbeMuon", "MuonLLbeBCK"),
    "combined": ("DLLelectron", "DLLmuon", "DLLkaon", "DLLproton"),
}

#: Acceptance flags (0/1), one per subdetector.
ACCEPTANCE_FLAGS: tuple[str, ...] = (
    "FlagSpd", "FlagPrs", "FlagEcal", "FlagHcal", "FlagBrem", "FlagRICH1", "FlagRICH2", "FlagMuon",
)

#: RICH threshold flags (momentum above each species' Cherenkov threshold).
RICH_THRESHOLD_FLAGS: tuple[str, ...] = (
    "RICHpFlagElectron", "RICHpFlagMuon", "RICHpFlagPion", "RICHpFlagKaon", "RICHpFlagProton",
)


def feature_index(name: str) -> int:
    """Position of a feature in the model input."""
    return FEATURES.index(name)
