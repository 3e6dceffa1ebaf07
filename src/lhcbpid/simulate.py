"""Simulated LHCb PID data: the real schema, physics-shaped per class, calibrated to the real statistics.

The model (documented in docs/simulation.md) draws each track's class, kinematics and track fit, then
the response of each subdetector (RICH, SPD, PRS, ECAL, HCAL, brem, muon stations) to the species that
really made the hits (a ghost borrows the response of a nearby real particle at a wrong momentum), then
the delta-log-likelihoods the way the reconstruction would compute them, and finally the combined DLLs
as sums of the subdetector ones. A column is -999 exactly when its subdetector has no information.
"""

from __future__ import annotations

import gzip
import os
import sys
import time
from pathlib import Path

import numpy as np

from lhcbpid import schema
from lhcbpid.errors import InputError

Columns = dict[str, np.ndarray]

# Class indices (schema.CLASSES order).
ELECTRON, GHOST, KAON, MUON, PION, PROTON = range(6)
N_CLASSES = len(schema.CLASSES)

#: Particle masses in MeV/c^2 by class index (the ghost row is unused: ghosts borrow a species).
MASS_MEV = np.array([0.511, 0.0, 493.68, 105.66, 139.57, 938.27])

#: Preselection visible in the real data.
P_MIN_MEV = 1110.0
P_TRACKING_TURN_ON_MEV = 600.0  # tracking efficiency 1 - exp(-(p - P_MIN) / this)
GHOST_PROB_MAX = 0.4
GHOST_PROB_CEILING = 0.3995  # drawn values stay below the cut even after float32 rounding
CHI2_PER_NDOF_CEILING = 3.999
CHI2_PER_NDOF_MAX = 4.0

# --- kinematics: log-normal momentum per class (median in MeV, sigma of ln p), pseudorapidity ---
P_MEDIAN_MEV = np.array([6500.0, 5800.0, 7600.0, 12000.0, 8400.0, 6000.0])
P_LOG_SIGMA = np.array([1.10, 1.05, 1.15, 1.0, 1.15, 1.15])
ETA_SHIFT = np.array([0.0, 0.15, 0.0, -0.15, 0.0, -0.05])

# --- track fit: chi2 scale per class (median, ln sigma), ghost-probability logit per class ---
CHI2_SCALE_MEDIAN = np.array([1.10, 1.25, 1.07, 1.07, 1.08, 1.07])
CHI2_SCALE_SIGMA = np.array([0.30, 0.38, 0.28, 0.28, 0.28, 0.28])
GHOST_LOGIT_MEAN = np.array([-4.4, -3.35, -4.8, -4.8, -4.5, -4.8])
GHOST_LOGIT_SIGMA = np.array([1.15, 1.25, 1.1, 1.1, 1.15, 1.1])
GHOST_LOGIT_CHI2_SLOPE = 3.5

# --- acceptance ---
GHOST_BLIND_FRACTION = 0.075  # ghosts that miss every subdetector (all detector columns -999)

# --- response species: whose hits each class's detector response comes from (columns e, -, K, mu, pi, p).
# Ghosts borrow a nearby real particle's hits at a wrong momentum; real particles occasionally respond as
# another species: decays in flight (K, pi -> mu nu), hadronic interactions and truth mis-association.
RESPONSE_MATRIX = np.array([
    [0.974, 0.0, 0.0, 0.0, 0.026, 0.0],     # Electron
    [0.13, 0.0, 0.16, 0.06, 0.47, 0.18],     # Ghost
    [0.0, 0.0, 0.985, 0.005, 0.010, 0.0],    # Kaon
    [0.0, 0.0, 0.0, 0.992, 0.008, 0.0],      # Muon
    [0.005, 0.0, 0.005, 0.015, 0.975, 0.0],  # Pion
    [0.0, 0.0, 0.030, 0.0, 0.050, 0.920],    # Proton
])
GHOST_P_MISMATCH_SIGMA = 0.7

# --- RICH: two gas radiators (n-1, saturated photon yield, single-photon angle resolution in rad) ---
RICH1_INDEX_MINUS_1 = 1.0 / (2 * 18.9**2)
RICH2_INDEX_MINUS_1 = 1.0 / (2 * 31.6**2)
RICH1_PHOTONS = 15.0
RICH2_PHOTONS = 11.0
RICH1_SIGMA_RAD = 1.7e-3
RICH2_SIGMA_RAD = 0.75e-3
RICH1_BACKGROUND = 3.0
RICH2_BACKGROUND = 2.0
RICH_PHOTON_OUTLIER_COST = 1.6  # log-likelihood cost of calling a signal photon background
RICH_RING_OVERLAP_FRACTION = 0.36  # tracks whose ring is confused with a neighbour's
RICH_GHOST_YIELD_MAX = 1.0

# --- calorimeters ---
ECAL_MIP_MEV = 290.0
HCAL_MIP_MEV = 800.0
PRS_MIP_MEV = 2.5
PRS_ELECTRON_MEDIAN_MEV = 28.0
PRS_SATURATION_MEV = 280.6
SPD_HIT_ENERGY = 3.2
HADRON_ECAL_INTERACTION = np.array([0.0, 0.0, 0.60, 0.0, 0.60, 0.65])

# --- muon system ---
MUON_P_MIN_MEV = 3000.0
MUON_LOOSE_MISID = np.array([0.030, 0.0, 0.075, 0.0, 0.080, 0.040])  # per class, non-muons
MUON_TIGHT_GIVEN_LOOSE_MISID = 0.68
MUON_LOOSE_EFFICIENCY = 0.975
MUON_TIGHT_GIVEN_LOOSE = 0.955


def _tiny(rng: np.random.Generator, n: int) -> np.ndarray:
    """Values of order 1e-6: the real data's 'exactly zero' spike."""
    return rng.normal(0.0, 4e-6, n)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function."""
    return 1.0 / (1.0 + np.exp(-x))


def _log_normal_pdf(x: np.ndarray, median: float | np.ndarray, sigma: float) -> np.ndarray:
    """Density of a log-normal with the given median and ln-sigma (x > 0)."""
    x = np.maximum(x, 1e-9)
    z = (np.log(x) - np.log(median)) / sigma
    return np.exp(-0.5 * z * z) / (x * sigma * np.sqrt(2 * np.pi))


def _normal_pdf(x: np.ndarray, mean: float | np.ndarray, sigma: float | np.ndarray) -> np.ndarray:
    """Density of a normal distribution."""
    z = (x - mean) / sigma
    return np.exp(-0.5 * z * z) / (sigma * np.sqrt(2 * np.pi))


def balanced_labels(rows: int, rng: np.random.Generator) -> np.ndarray:
    """Class indices, as balanced as rows allow, in random order."""
    return rng.permutation(np.arange(rows) % N_CLASSES).astype(np.int64)


def momentum(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Track momentum in MeV/c: a per-class log-normal times the low-momentum tracking efficiency, above the cut."""
    p = np.empty(len(y))
    todo = np.arange(len(y))
    while len(todo):
        cls = y[todo]
        draw = P_MEDIAN_MEV[cls] * np.exp(P_LOG_SIGMA[cls] * rng.standard_normal(len(todo)))
        p[todo] = draw
        found = rng.random(len(todo)) < 1.0 - np.exp(-(draw - P_MIN_MEV) / P_TRACKING_TURN_ON_MEV)
        todo = todo[~found]
    return p


def pseudorapidity(y: np.ndarray, p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pseudorapidity in the LHCb acceptance (1.8 to 5.4); faster tracks are more forward."""
    spread = 1.9 + 3.3 * rng.beta(2.0, 2.4, len(y)) + ETA_SHIFT[y]
    return np.clip(spread + 0.3 * (np.log(p) - np.log(8000.0)), 1.8, 5.4)


def track_fit(y: np.ndarray, rng: np.random.Generator) -> Columns:
    """Degrees of freedom, chi2 per subdetector, chi2/ndof, distance to the beam, ghost probability."""
    n = len(y)
    ghost = y == GHOST
    ndof1 = np.clip(np.rint(rng.normal(np.where(ghost, 5.6, 6.3), 3.0)), 1, 24)
    ndof2 = np.clip(np.rint(rng.normal(np.where(ghost, 13.6, 15.0), np.where(ghost, 4.6, 3.8))), 1, 30)
    ndof_rest = np.clip(np.rint(rng.normal(8.5, 2.5, n)), 1, 20)
    ndof = np.clip(ndof1 + ndof2 + ndof_rest, 7, 52)
    scale = CHI2_SCALE_MEDIAN[y] * np.exp(CHI2_SCALE_SIGMA[y] * rng.standard_normal(n))
    chi2_1 = scale * rng.chisquare(ndof1)
    chi2_2 = scale * rng.chisquare(ndof2)
    chi2_rest = scale * rng.chisquare(ndof_rest)
    per_ndof = (chi2_1 + chi2_2 + chi2_rest) / ndof
    logit = (GHOST_LOGIT_MEAN[y] + GHOST_LOGIT_CHI2_SLOPE * np.log(per_ndof)
             + GHOST_LOGIT_SIGMA[y] * rng.standard_normal(n) - 0.04 * (ndof - 29.0))
    ghost_prob = np.maximum(_sigmoid(logit), 0.0015 + 0.0004 * rng.random(n))
    distance = rng.gamma(np.where(ghost, 2.5, 4.0), np.where(ghost, 0.22, 0.13))
    return {
        "TrackNDoF": ndof, "TrackNDoFSubdetector1": ndof1, "TrackNDoFSubdetector2": ndof2,
        "TrackQualitySubdetector1": chi2_1, "TrackQualitySubdetector2": chi2_2,
        "TrackQualityPerNDoF": per_ndof, "TrackDistanceToZ": distance, "GhostProbability": ghost_prob,
    }


def preselected_track_fit(y: np.ndarray, rng: np.random.Generator) -> Columns:
    """Track fit redrawn until every row passes the preselection (ghost probability, chi2/ndof)."""
    cols = track_fit(y, rng)
    failing = np.flatnonzero((cols["GhostProbability"] >= GHOST_PROB_CEILING)
                             | (cols["TrackQualityPerNDoF"] >= CHI2_PER_NDOF_CEILING))
    while len(failing):
        redraw = track_fit(y[failing], rng)
        for name, values in redraw.items():
            cols[name][failing] = values
        still = ((redraw["GhostProbability"] >= GHOST_PROB_CEILING)
                 | (redraw["TrackQualityPerNDoF"] >= CHI2_PER_NDOF_CEILING))
        failing = failing[still]
    return cols


def response_species(y: np.ndarray, p: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Species and momentum the detector responds to (RESPONSE_MATRIX): mostly the true ones."""
    cumulative = np.cumsum(RESPONSE_MATRIX, axis=1)[y]
    species = (rng.random(len(y))[:, None] > cumulative).sum(axis=1).clip(max=N_CLASSES - 1)
    mimic = species != y
    fraction = np.where(y == GHOST, np.exp(GHOST_P_MISMATCH_SIGMA * rng.standard_normal(len(y))),
                        np.where(mimic, rng.uniform(0.5, 1.0, len(y)), 1.0))
    return species, np.maximum(p * fraction, 500.0)


def acceptance(y: np.ndarray, p: np.ndarray, eta: np.ndarray, rng: np.random.Generator) -> Columns:
    """0/1 acceptance flags per subdetector from direction and momentum (low momentum is swept out)."""
    n = len(y)
    seen = ~((y == GHOST) & (rng.random(n) < GHOST_BLIND_FRACTION))
    p_gev = p / 1000.0
    soft = np.exp(-(p_gev - 1.1) / 1.3)  # 1 at the cut, fading by ~4 GeV
    rich1 = seen & (eta < 4.45) & (rng.random(n) > 0.03 + 0.35 * soft)
    rich2 = seen & (eta > 3.25) & (rng.random(n) > 0.02 + 0.9 * soft)
    calo_u = rng.random(n)
    calo_miss = 0.105 + 0.30 * soft + 0.08 * (eta > 4.6)
    spd = seen & (calo_u > calo_miss)
    prs = seen & (calo_u > calo_miss + 0.002)
    ecal = seen & (calo_u > calo_miss + 0.035)
    hcal = seen & (calo_u > calo_miss + 0.09)
    brem = seen & np.where(ecal, rng.random(n) < 0.915, rng.random(n) < 0.30)
    muon = seen & (rng.random(n) > 0.135 + 0.35 * soft)
    return {
        "FlagRICH1": rich1, "FlagRICH2": rich2, "FlagSpd": spd, "FlagPrs": prs, "FlagEcal": ecal,
        "FlagHcal": hcal, "FlagBrem": brem, "FlagMuon": muon,
    }


def _rich_radiator(species: np.ndarray, p_response: np.ndarray, p_track: np.ndarray, yield_scale: np.ndarray,
                   index_minus_1: float, photons: float, sigma: float, background: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Log-likelihoods [rows, 6] of one radiator for hypotheses e, BCK, K, mu, pi, p (BCK = no ring)."""
    n = len(species)
    theta_sat2 = 2.0 * index_minus_1
    true_theta2 = np.maximum(theta_sat2 - (MASS_MEV[species] / p_response) ** 2, 0.0)
    true_theta2[species == GHOST] = 0.0
    n_signal = rng.poisson(photons * yield_scale * true_theta2 / theta_sat2)
    bkg_true = background * np.exp(0.6 * rng.standard_normal(n))
    n_obs = n_signal + rng.poisson(bkg_true)
    bkg_est = bkg_true * np.exp(0.2 * rng.standard_normal(n))
    mean_theta = np.sqrt(true_theta2) + sigma * rng.standard_normal(n) / np.sqrt(np.maximum(n_signal, 1))
    overlap = rng.random(n) < RICH_RING_OVERLAP_FRACTION
    mean_theta[overlap] += rng.normal(0.0, 3.0 * sigma, overlap.sum())
    ll = np.empty((n, N_CLASSES))
    for h in range(N_CLASSES):
        theta2_h = np.maximum(theta_sat2 - (MASS_MEV[h] / p_track) ** 2, 0.0) if h != GHOST else np.zeros(n)
        expected = photons * yield_scale * theta2_h / theta_sat2 * (h != GHOST)
        lit = expected > 0
        pull2 = (mean_theta - np.sqrt(theta2_h)) ** 2 / (2 * sigma**2)
        per_photon = np.where(lit, np.minimum(0.5 + pull2, RICH_PHOTON_OUTLIER_COST), RICH_PHOTON_OUTLIER_COST)
        mu = expected + bkg_est
        ll[:, h] = n_obs * np.log(mu) - mu - n_signal * per_photon
    return ll


def rich(y: np.ndarray, species: np.ndarray, p: np.ndarray, p_response: np.ndarray, flags: Columns,
         rng: np.random.Generator) -> Columns:
    """RICH threshold flags and DLLs versus the pion (e, mu, K, p, BCK); -999 without RICH acceptance."""
    n = len(y)
    has_rich = flags["FlagRICH1"] | flags["FlagRICH2"]
    yield_scale = np.clip(rng.normal(0.85, 0.18, n), 0.15, 1.0)
    ghost = y == GHOST
    yield_scale[ghost] *= rng.uniform(0.0, RICH_GHOST_YIELD_MAX, ghost.sum())
    ll = np.zeros((n, N_CLASSES))
    for flag, nm1, photons, sigma, bkg in (
            ("FlagRICH1", RICH1_INDEX_MINUS_1, RICH1_PHOTONS, RICH1_SIGMA_RAD, RICH1_BACKGROUND),
            ("FlagRICH2", RICH2_INDEX_MINUS_1, RICH2_PHOTONS, RICH2_SIGMA_RAD, RICH2_BACKGROUND)):
        inside = flags[flag]
        ll[inside] += _rich_radiator(species[inside], p_response[inside], p[inside], yield_scale[inside],
                                     nm1, photons, sigma, bkg, rng)
    dll = ll - ll[:, [PION]]
    cols: Columns = {}
    for name, h in (("RICH_DLLbeElectron", ELECTRON), ("RICH_DLLbeMuon", MUON), ("RICH_DLLbeKaon", KAON),
                    ("RICH_DLLbeProton", PROTON), ("RICH_DLLbeBCK", GHOST)):
        value = dll[:, h] * (1.0 + 0.04 * rng.standard_normal(n))
        zero = np.abs(dll[:, h]) < 1e-9
        value[zero] = _tiny(rng, zero.sum())
        cols[name] = np.where(has_rich, value, schema.SENTINEL)
    for name, h in (("RICHpFlagElectron", ELECTRON), ("RICHpFlagMuon", MUON), ("RICHpFlagPion", PION),
                    ("RICHpFlagKaon", KAON), ("RICHpFlagProton", PROTON)):
        cols[name] = has_rich & (p > 18.9 * MASS_MEV[h])
    return cols


def spd(species: np.ndarray, y: np.ndarray, flags: Columns, rng: np.random.Generator) -> Columns:
    """Scintillating pad: 3.2 for a hit, 0 for none, -999 outside acceptance."""
    hit_prob = np.where(y == GHOST, 0.62, np.where(species == ELECTRON, 0.96, 0.925))
    hit = rng.random(len(y)) < hit_prob
    return {"SpdE": np.where(flags["FlagSpd"], np.where(hit, SPD_HIT_ENERGY, 0.0), schema.SENTINEL)}


def _prs_density_electron(e: np.ndarray) -> np.ndarray:
    """Preshower energy density for electrons (model used by the reconstruction's DLL)."""
    return 0.9 * _log_normal_pdf(e, PRS_ELECTRON_MEDIAN_MEV, 0.75) + 0.1 * _log_normal_pdf(e, PRS_MIP_MEV, 0.5)


def _prs_density_hadron(e: np.ndarray) -> np.ndarray:
    """Preshower energy density for pions (mostly a MIP, sometimes an early interaction)."""
    return 0.88 * _log_normal_pdf(e, PRS_MIP_MEV, 0.5) + 0.12 * _log_normal_pdf(e, 14.0, 0.9)


def prs(species: np.ndarray, y: np.ndarray, flags: Columns, rng: np.random.Generator) -> Columns:
    """Preshower energy (MeV) and its electron-vs-pion DLL."""
    n = len(y)
    e = np.where(
        species == ELECTRON,
        np.where(rng.random(n) < 0.9, PRS_ELECTRON_MEDIAN_MEV * np.exp(0.75 * rng.standard_normal(n)),
                 PRS_MIP_MEV * np.exp(0.5 * rng.standard_normal(n))),
        np.where(rng.random(n) < 0.22 + 0.08 * (species == PROTON),
                 14.0 * np.exp(0.9 * rng.standard_normal(n)), PRS_MIP_MEV * np.exp(0.5 * rng.standard_normal(n))))
    e = np.minimum(e, PRS_SATURATION_MEV)
    no_signal = rng.random(n) < np.where(y == GHOST, 0.35, np.where(species == ELECTRON, 0.03, 0.13))
    e[no_signal] = _tiny(rng, no_signal.sum())
    dll = np.log(_prs_density_electron(np.abs(e)) + 1e-3) - np.log(_prs_density_hadron(np.abs(e)) + 1e-3)
    dll = np.clip(dll + 0.15 * rng.standard_normal(n), -3.2, 4.6)
    on = flags["FlagPrs"]
    return {"PrsE": np.where(on, e, schema.SENTINEL), "PrsDLLbeElectron": np.where(on, dll, schema.SENTINEL)}


def _moyal(rng: np.random.Generator, n: int) -> np.ndarray:
    """Landau-like energy-loss fluctuation (Moyal distribution, mode 0)."""
    return -2.0 * np.log(np.abs(rng.standard_normal(n)) + 1e-12)


def calorimeter_energies(species: np.ndarray, p_response: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """ECAL and HCAL energies (MeV) deposited by each species: showers, hadron showers, MIPs."""
    n = len(species)
    gev = p_response / 1000.0
    electron = species == ELECTRON
    muon = species == MUON
    brem_loss = np.where(rng.random(n) < 0.45, rng.uniform(0.4, 1.0, n), 1.0)
    ecal_res = np.sqrt(0.12**2 / gev + 0.05**2)
    ecal_e = p_response * (0.96 + ecal_res * rng.standard_normal(n)) * brem_loss
    mip_ecal = ECAL_MIP_MEV * (1.0 + 0.12 * _moyal(rng, n))
    interacts = rng.random(n) < HADRON_ECAL_INTERACTION[species]
    charge_exchange = rng.random(n) < 0.15
    hadron_frac = np.where(charge_exchange, rng.uniform(0.6, 1.0, n), rng.beta(1.6, 3.5, n))
    ecal_h = np.where(interacts, p_response * hadron_frac * np.where(charge_exchange, 0.95, 0.75) + ECAL_MIP_MEV, mip_ecal)
    radiative = muon & (rng.random(n) < 0.02 * np.log1p(gev))
    ecal_mu = mip_ecal + radiative * p_response * rng.beta(1.0, 6.0, n)
    ecal = np.where(electron, ecal_e, np.where(muon, ecal_mu, ecal_h))
    hcal_res = np.sqrt(0.69**2 / gev + 0.09**2)
    remaining = np.maximum(p_response - np.where(interacts, p_response * hadron_frac, 0.0), 0.0)
    hadron_response = np.where(species == PROTON, 0.45, 0.42)
    hcal_h = remaining * hadron_response * (1.0 + hcal_res * rng.standard_normal(n))
    hcal_mu = HCAL_MIP_MEV * (1.0 + 0.25 * _moyal(rng, n)) * (1.0 + 0.05 * np.log1p(gev))
    hcal_e = p_response * 0.015 * np.exp(0.8 * rng.standard_normal(n))
    hcal = np.where(electron, hcal_e, np.where(muon, hcal_mu, hcal_h))
    return np.maximum(ecal, 0.0), np.maximum(hcal, 0.0)


def _eop_density_electron(eop: np.ndarray) -> np.ndarray:
    """E/p density of electrons (peak near 1, brem-loss tail)."""
    return 0.8 * _normal_pdf(eop, 0.95, 0.09) + 0.2 * np.where((eop > 0.05) & (eop < 1.3), 0.8, 0.0)


def _eop_density_pion(eop: np.ndarray, mip_eop: np.ndarray) -> np.ndarray:
    """ECAL E/p density of pions (MIP peak, then an interacting tail)."""
    return 0.55 * _normal_pdf(eop, mip_eop, 0.3 * mip_eop + 0.01) + 0.45 * 3.2 * np.exp(-3.2 * eop)


def ecal(species: np.ndarray, y: np.ndarray, p: np.ndarray, ecal_e: np.ndarray, flags: Columns,
         rng: np.random.Generator) -> Columns:
    """ECAL energy, its electron and muon DLLs, shower shape and track-cluster match qualities."""
    n = len(y)
    no_cluster = rng.random(n) < np.where(y == GHOST, 0.35, np.where(species == ELECTRON, 0.08, np.where(species == MUON, 0.2, 0.1)))
    energy = np.where(no_cluster, _tiny(rng, n), ecal_e)
    eop = np.abs(energy) / p
    mip_eop = ECAL_MIP_MEV / p
    dll_e = np.log(_eop_density_electron(eop) + 0.1) - np.log(_eop_density_pion(eop, mip_eop) + 0.1)
    dll_e = np.clip(dll_e + 0.25 * rng.standard_normal(n), -4.5, 4.34)
    mu_like = _log_normal_pdf(np.abs(energy) + 1.0, ECAL_MIP_MEV, 0.3)
    pion_like = 0.55 * mu_like + 0.45 * 3.2 * np.exp(-3.2 * eop) / p
    dll_mu = np.clip(np.log(mu_like + 1e-6) - np.log(pion_like + 1e-6), -7.0, 2.15) + 0.2 * rng.standard_normal(n)
    dll_mu = np.minimum(dll_mu, 2.15)
    electron = species == ELECTRON
    ghost = y == GHOST
    match2d = np.where(electron, rng.chisquare(2, n) * 0.8, rng.chisquare(2, n) * 2.2)
    match2d = np.where(ghost, np.exp(rng.normal(1.0, 2.0, n)), match2d)
    shape_missing = no_cluster | (rng.random(n) < np.where(energy < 600.0, 0.2, 0.03))
    shower = np.where(electron, rng.normal(140.0, 250.0, n), rng.normal(-120.0, 480.0, n))
    shower += 60.0 * rng.standard_t(1.5, n)
    match3d = np.where(electron, rng.chisquare(3, n) * 3.0, np.exp(rng.normal(6.0, 1.6, n)))
    on = flags["FlagEcal"]
    return {
        "EcalE": np.where(on, energy, schema.SENTINEL),
        "EcalDLLbeElectron": np.where(on, dll_e, schema.SENTINEL),
        "EcalDLLbeMuon": np.where(on, dll_mu, schema.SENTINEL),
        "Calo2dFitQuality": np.where(on & ~no_cluster, match2d, schema.SENTINEL),
        "EcalShowerLongitudinalParameter": np.where(on & ~shape_missing, shower, schema.SENTINEL),
        "Calo3dFitQuality": np.where(on & ~shape_missing, match3d, schema.SENTINEL),
    }


def hcal(species: np.ndarray, y: np.ndarray, p: np.ndarray, hcal_e: np.ndarray, flags: Columns,
         rng: np.random.Generator) -> Columns:
    """HCAL energy and its electron and muon DLLs (E/p of hadron showers, the muon MIP)."""
    n = len(y)
    no_cluster = rng.random(n) < np.where(y == GHOST, 0.15, np.where(species == ELECTRON, 0.10, 0.02))
    energy = np.where(no_cluster, _tiny(rng, n), hcal_e)
    eop = np.abs(energy) / p
    pion_like = 0.85 * _normal_pdf(eop, 0.5, 0.22) + 0.15 * 2.0 * np.exp(-2.0 * eop)
    electron_like = 12.0 * np.exp(-12.0 * eop)
    mu_like = _log_normal_pdf(np.abs(energy) + 1.0, HCAL_MIP_MEV, 0.45) * p
    dll_e = np.clip(np.log(electron_like + 0.05) - np.log(pion_like + 0.05), -4.0, 3.0) + 0.15 * rng.standard_normal(n)
    dll_mu = np.clip(np.log(mu_like + 0.05) - np.log(pion_like + 0.05), -6.0, 2.87) + 0.2 * rng.standard_normal(n)
    dll_mu = np.minimum(dll_mu, 2.87)
    on = flags["FlagHcal"]
    return {
        "HcalE": np.where(on, energy, schema.SENTINEL),
        "HcalDLLbeElectron": np.where(on, dll_e, schema.SENTINEL),
        "HcalDLLbeMuon": np.where(on, dll_mu, schema.SENTINEL),
    }


def brem(species: np.ndarray, y: np.ndarray, flags: Columns, rng: np.random.Generator) -> Columns:
    """Bremsstrahlung-photon DLL: a constant when no photon cluster is found where one is expected."""
    n = len(y)
    electron = species == ELECTRON
    real_brem = electron & (y != GHOST) & (rng.random(n) < 0.45)
    random_cluster = ~real_brem & (rng.random(n) < np.where(y == GHOST, 0.75, 0.68))
    value = -0.63897 + 1e-5 * rng.standard_normal(n)
    value = np.where(random_cluster, -0.639 + rng.gamma(1.3, 0.4, n), value)
    value = np.where(real_brem, np.clip(rng.normal(1.6, 1.3, n), -0.6, 4.79), value)
    return {"BremDLLbeElectron": np.where(flags["FlagBrem"], value, schema.SENTINEL)}


def muon_system(species: np.ndarray, y: np.ndarray, p: np.ndarray, flags: Columns,
                rng: np.random.Generator) -> Columns:
    """IsMuonLoose, IsMuon and the muon/background log-likelihoods of the hit pattern."""
    n = len(y)
    reach = flags["FlagMuon"] & (p > MUON_P_MIN_MEV)
    is_muon = species == MUON
    real_muon = is_muon & (y != GHOST)
    misid = np.where(y == GHOST, 0.16, MUON_LOOSE_MISID[species] * (1.0 + 6000.0 / p) / 1.6)
    loose = reach & np.where(real_muon, rng.random(n) < MUON_LOOSE_EFFICIENCY, rng.random(n) < misid)
    tight = loose & (rng.random(n) < np.where(real_muon, MUON_TIGHT_GIVEN_LOOSE, MUON_TIGHT_GIVEN_LOOSE_MISID))
    scattering = 1.0 + 4000.0 / p
    decay_in_flight = ~real_muon & (rng.random(n) < 0.5) & (y != GHOST)
    distance = np.where(real_muon, rng.gamma(2.0, 0.6, n) * scattering,
                        np.where(decay_in_flight, rng.gamma(2.0, 0.8, n) * scattering, rng.gamma(3.0, 1.8, n)))
    distance = np.where(tight, distance, distance * 1.6)
    ll_mu = np.log(distance * np.exp(-distance / 0.6) / 0.36 + 1e-5)
    ll_bck = np.log(distance**2 * np.exp(-distance / 1.8) / (2 * 1.8**3) + 1e-5)
    ll_mu = np.maximum(ll_mu, -11.5) + 0.1 * rng.standard_normal(n)
    ll_bck = np.maximum(ll_bck, -11.5) + 0.1 * rng.standard_normal(n)
    return {
        "FlagMuon": flags["FlagMuon"], "MuonLooseFlag": loose, "MuonFlag": tight,
        "MuonLLbeMuon": np.where(loose, ll_mu, schema.SENTINEL),
        "MuonLLbeBCK": np.where(loose, ll_bck, schema.SENTINEL),
    }


def combined(cols: Columns, flags: Columns, rng: np.random.Generator) -> Columns:
    """Combined DLLs versus the pion: sums of the available subdetector DLLs; -999 with no detector at all."""
    n = len(cols["TrackP"])

    def part(name: str) -> np.ndarray:
        v = cols[name]
        return np.where(v == schema.SENTINEL, 0.0, v)

    muon_term = np.where(cols["MuonLooseFlag"], part("MuonLLbeMuon") - part("MuonLLbeBCK"),
                         np.where(flags["FlagMuon"] & (cols["TrackP"] > MUON_P_MIN_MEV), -1.0, 0.0))
    dll_e = (part("RICH_DLLbeElectron") + part("EcalDLLbeElectron") + part("PrsDLLbeElectron")
             + part("BremDLLbeElectron") + part("HcalDLLbeElectron"))
    dll_mu = part("RICH_DLLbeMuon") + part("EcalDLLbeMuon") + part("HcalDLLbeMuon") + muon_term
    dll_k = part("RICH_DLLbeKaon")
    dll_p = part("RICH_DLLbeProton")
    any_info = np.zeros(n, dtype=bool)
    for f in flags.values():
        any_info |= f
    out: Columns = {}
    for name, v, noise in (("DLLelectron", dll_e, 0.3), ("DLLmuon", dll_mu, 0.3),
                           ("DLLkaon", dll_k, 0.25), ("DLLproton", dll_p, 0.25)):
        zero = np.abs(v) < 1e-4
        v = np.where(zero, _tiny(rng, n), v + noise * rng.standard_normal(n))
        out[name] = np.where(any_info, v, schema.SENTINEL)
    return out


def check_rows_and_seed(rows: int, seed: int) -> None:
    """Raise InputError unless rows is a positive integer and seed a non-negative one."""
    if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 1:
        raise InputError(f"simulate: rows must be a positive integer, got {rows!r}; pass --rows 1 or more")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"simulate: seed must be a non-negative integer, got {seed!r}; pass --seed 0 or more")


def simulate(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """X float32 [rows, 49] in schema.FEATURES order, y int64 [rows] indices into schema.CLASSES (balanced, shuffled)."""
    check_rows_and_seed(rows, seed)
    rng = np.random.default_rng(seed)
    y = balanced_labels(rows, rng)
    p = momentum(y, rng)
    eta = pseudorapidity(y, p, rng)
    cols: Columns = {"TrackP": p, "TrackPt": p / np.cosh(eta)}
    cols.update(preselected_track_fit(y, rng))
    flags = acceptance(y, p, eta, rng)
    species, p_response = response_species(y, p, rng)
    cols.update(rich(y, species, p, p_response, flags, rng))
    cols.update(spd(species, y, flags, rng))
    cols.update(prs(species, y, flags, rng))
    ecal_e, hcal_e = calorimeter_energies(species, p_response, rng)
    cols.update(ecal(species, y, p, ecal_e, flags, rng))
    cols.update(hcal(species, y, p, hcal_e, flags, rng))
    cols.update(brem(species, y, flags, rng))
    cols.update(muon_system(species, y, p, flags, rng))
    cols.update({name: flags[name] for name in schema.ACCEPTANCE_FLAGS})
    cols.update(combined(cols, flags, rng))
    x = np.empty((rows, len(schema.FEATURES)), dtype=np.float32)
    for j, name in enumerate(schema.FEATURES):
        x[:, j] = cols[name]
    return x, y


def _output_format(path: Path) -> str:
    """'csv', 'csv.gz' or 'parquet' from the file name; anything else is an InputError."""
    name = path.name.lower()
    for fmt in ("csv.gz", "csv", "parquet"):
        if name.endswith("." + fmt):
            return fmt
    raise InputError(f"simulate: cannot tell the format of {path}; end the name in .csv, .csv.gz or .parquet")


GZIP_LEVEL = 1


def _write_table_atomically(table: "pa.Table", path: Path, fmt: str) -> None:
    """Write a pyarrow table as csv, csv.gz or parquet via a temp file in the same directory."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if fmt == "parquet":
            pq.write_table(table, tmp)
        elif fmt == "csv.gz":
            # Level-1 gzip is ~7x faster than pyarrow's default level; mtime=0 and no name keep bytes reproducible.
            with open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb",
                                                       compresslevel=GZIP_LEVEL, mtime=0) as out:
                pacsv.write_csv(table, out)
        else:
            pacsv.write_csv(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def simulated_table(x: np.ndarray, y: np.ndarray, kind: str) -> tuple["pa.Table", "pa.Table | None"]:
    """The file's table (training: TRAINING_COLUMNS; test: FEATURES then ID) and, for test, the ID,Label table."""
    import pyarrow as pa

    labels = pa.array(schema.CLASSES).take(pa.array(y))
    feature_arrays = {name: pa.array(x[:, j]) for j, name in enumerate(schema.FEATURES)}
    if kind == "training":
        arrays = [labels if name == schema.LABEL else feature_arrays[name] for name in schema.TRAINING_COLUMNS]
        return pa.table(arrays, names=list(schema.TRAINING_COLUMNS)), None
    ids = pa.array(np.arange(len(y), dtype=np.int64))
    arrays = [feature_arrays[name] for name in schema.FEATURES] + [ids]
    return (pa.table(arrays, names=list(schema.TEST_COLUMNS)),
            pa.table([ids, labels], names=[schema.ID, schema.LABEL]))


def write_simulated(path: Path, rows: int, seed: int, kind: str) -> None:
    """Simulate and write a training file (with Label) or a test file (ID last, labels in PATH.labels.csv)."""
    path = Path(path)
    if kind not in ("training", "test"):
        raise InputError(f"simulate: --kind must be 'training' or 'test', got {kind!r}")
    check_rows_and_seed(rows, seed)
    fmt = _output_format(path)
    if not path.parent.is_dir():
        raise InputError(f"simulate: directory {path.parent} does not exist; create it or choose another --out")
    start = time.perf_counter()
    print(f"simulate: {rows:,} {kind} rows (seed {seed}) ...", file=sys.stderr, flush=True)
    x, y = simulate(rows, seed)
    table, labels = simulated_table(x, y, kind)
    print(f"simulate: generated in {time.perf_counter() - start:.1f} s; writing {path}", file=sys.stderr, flush=True)
    _write_table_atomically(table, path, fmt)
    if labels is not None:
        _write_table_atomically(labels, Path(f"{path}.labels.csv"), "csv")
    print(f"simulate: wrote {path} in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)


# --- calibration ---

#: Flag rates of the real data (mean of the 0/1 column).
TARGET_FLAG_RATES = {
    "MuonFlag": 0.166, "MuonLooseFlag": 0.191, "FlagMuon": 0.821, "FlagSpd": 0.853, "FlagPrs": 0.851,
    "FlagEcal": 0.818, "FlagHcal": 0.765, "FlagBrem": 0.792, "FlagRICH1": 0.833, "FlagRICH2": 0.502,
    "RICHpFlagElectron": 0.951, "RICHpFlagMuon": 0.919, "RICHpFlagPion": 0.859,
}
#: Share of -999 per subdetector group of the real data: (columns, low, high).
TARGET_MISSING_SHARES = {
    "Spd": (("SpdE",), 0.15, 0.15),
    "Prs": (("PrsE", "PrsDLLbeElectron"), 0.15, 0.15),
    "Ecal DLLs": (("EcalDLLbeElectron", "EcalDLLbeMuon"), 0.18, 0.18),
    "Hcal": (("HcalE", "HcalDLLbeElectron", "HcalDLLbeMuon"), 0.235, 0.235),
    "Brem": (("BremDLLbeElectron",), 0.21, 0.21),
    "RICH DLLs": (("RICH_DLLbeElectron", "RICH_DLLbeMuon", "RICH_DLLbeKaon", "RICH_DLLbeProton",
                   "RICH_DLLbeBCK"), 0.05, 0.05),
    "combined DLLs": (("DLLelectron", "DLLmuon", "DLLkaon", "DLLproton"), 0.01, 0.015),
    "MuonLL": (("MuonLLbeMuon", "MuonLLbeBCK"), 0.81, 0.81),
}
TARGET_P_QUARTILES = (4137.7, 8069.8, 17501.6)
#: The course baseline on real data: GBC one-vs-rest ROC AUC per class and multiclass log loss.
TARGET_GBC_AUC = {"Electron": 0.9839, "Ghost": 0.9509, "Kaon": 0.9165, "Muon": 0.9879, "Pion": 0.9472,
                  "Proton": 0.9149}
TARGET_GBC_LOG_LOSS = 0.669
FLAG_TOLERANCE = 0.03
MISSING_TOLERANCE = 0.03
P_QUARTILE_TOLERANCE = 0.15
AUC_TOLERANCE = 0.01
LOG_LOSS_TOLERANCE = 0.04


def baseline_gbc_scores(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The course baseline GBC trained on the first half, and its probabilities on the second half."""
    from sklearn.ensemble import GradientBoostingClassifier

    half = len(y) // 2
    model = GradientBoostingClassifier(learning_rate=0.1, n_estimators=50, subsample=0.3, max_depth=3,
                                       min_samples_leaf=100, random_state=13)
    model.fit(x[:half], y[:half])
    return y[half:], model.predict_proba(x[half:])


def pairwise_auc(y: np.ndarray, proba: np.ndarray, a: int, b: int) -> float:
    """ROC AUC separating class a from class b with P(a) / (P(a) + P(b)), on rows of those two classes."""
    from sklearn.metrics import roc_auc_score

    rows = (y == a) | (y == b)
    score = proba[rows, a] / np.maximum(proba[rows, a] + proba[rows, b], 1e-12)
    return float(roc_auc_score(y[rows] == a, score))


def statistics_checks(x: np.ndarray, y: np.ndarray) -> list[tuple[str, str, float, bool]]:
    """(name, target, value, passed) for flag rates, -999 shares, momentum quartiles, SpdE, cuts, balance."""
    col = {name: x[:, j] for j, name in enumerate(schema.FEATURES)}
    checks: list[tuple[str, str, float, bool]] = []
    for name, rate in TARGET_FLAG_RATES.items():
        value = float(col[name].mean())
        checks.append((f"rate {name}", f"{rate:.3f} +- {FLAG_TOLERANCE}", value, abs(value - rate) <= FLAG_TOLERANCE))
    for group, (names, low, high) in TARGET_MISSING_SHARES.items():
        value = float(np.mean([np.mean(col[n] == schema.SENTINEL) for n in names]))
        target = f"{low:.3f}" if low == high else f"{low:.3f}-{high:.3f}"
        checks.append((f"-999 share {group}", f"{target} +- {MISSING_TOLERANCE}", value,
                       low - MISSING_TOLERANCE <= value <= high + MISSING_TOLERANCE))
    quartiles = np.percentile(col["TrackP"], [25, 50, 75])
    for q, target, value in zip((25, 50, 75), TARGET_P_QUARTILES, quartiles):
        checks.append((f"TrackP q{q}", f"{target:.1f} +- 15%", float(value),
                       abs(value / target - 1) <= P_QUARTILE_TOLERANCE))
    spd_values = np.unique(col["SpdE"])
    spd_ok = bool(np.all(np.isin(spd_values, np.float32([schema.SENTINEL, 0.0, SPD_HIT_ENERGY]))))
    checks.append(("SpdE values", "{-999, 0, 3.2}", float(len(spd_values)), spd_ok))
    p_min = float(col["TrackP"].min())
    checks.append(("min TrackP", f"> {P_MIN_MEV - 10:.0f}", p_min, p_min > P_MIN_MEV - 10))
    gp_max = float(col["GhostProbability"].max())
    checks.append(("max GhostProbability", f"< {GHOST_PROB_MAX}", gp_max, gp_max < GHOST_PROB_MAX))
    chi2_max = float(col["TrackQualityPerNDoF"].max())
    checks.append(("max TrackQualityPerNDoF", f"< {CHI2_PER_NDOF_MAX}", chi2_max, chi2_max < CHI2_PER_NDOF_MAX))
    counts = np.bincount(y, minlength=N_CLASSES)
    spread = float(counts.max() - counts.min())
    checks.append(("class count spread (rows)", "<= 1", spread, spread <= 1))
    return checks


def difficulty_checks(x: np.ndarray, y: np.ndarray) -> list[tuple[str, str, float, bool]]:
    """(name, target, value, passed) for the baseline GBC's AUCs, log loss and the hardest pair."""
    from sklearn.metrics import log_loss, roc_auc_score

    y_test, proba = baseline_gbc_scores(x, y)
    checks: list[tuple[str, str, float, bool]] = []
    for c, name in enumerate(schema.CLASSES):
        value = float(roc_auc_score(y_test == c, proba[:, c]))
        target = TARGET_GBC_AUC[name]
        checks.append((f"GBC AUC {name}", f"{target:.4f} +- {AUC_TOLERANCE}", value, abs(value - target) <= AUC_TOLERANCE))
    value = float(log_loss(y_test, proba, labels=list(range(N_CLASSES))))
    checks.append(("GBC log loss", f"{TARGET_GBC_LOG_LOSS:.3f} +- {LOG_LOSS_TOLERANCE}", value,
                   abs(value - TARGET_GBC_LOG_LOSS) <= LOG_LOSS_TOLERANCE))
    pairs = {(a, b): pairwise_auc(y_test, proba, a, b) for a in range(N_CLASSES) for b in range(a + 1, N_CLASSES)}
    kp = pairs[(KAON, PROTON)]
    others = min(v for k, v in pairs.items() if k != (KAON, PROTON))
    checks.append(("GBC pairwise AUC Kaon-Proton", f"lowest pair (next {others:.4f})", kp, kp < others))
    return checks


def format_checks(checks: list[tuple[str, str, float, bool]]) -> str:
    """The calibration table as aligned text: target, value, pass/fail."""
    lines = [f"{'check':<34} {'target':<28} {'value':>12}  result"]
    for name, target, value, passed in checks:
        lines.append(f"{name:<34} {target:<28} {value:>12.4f}  {'pass' if passed else 'FAIL'}")
    failed = sum(not c[3] for c in checks)
    lines.append(f"{len(checks) - failed}/{len(checks)} targets pass")
    return "\n".join(lines)


def calibration_check(rows: int = 240_000, seed: int = 42) -> bool:
    """Simulate `rows`, print a table (target, value, pass/fail) for every calibration target, return True iff all pass."""
    if rows < 2 * N_CLASSES * 10:
        raise InputError(f"simulate --check: --rows must be at least {2 * N_CLASSES * 10}, got {rows}")
    x, y = simulate(rows, seed)
    print(f"calibration of the simulator: {rows:,} rows, seed {seed}; GBC trained on the first half "
          f"({rows // 2:,} rows), scored on the rest (takes a minute or two)", flush=True)
    checks = statistics_checks(x, y) + difficulty_checks(x, y)
    print(format_checks(checks))
    return all(c[3] for c in checks)
