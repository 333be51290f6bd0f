//! Shamir polynomials, Feldman commitments and Lagrange coefficients.
//!
//! Shares are evaluations at the node index `x = i` (1..=n), as in FROST (RFC 9591 §4.1) where a
//! participant identifier is the scalar `i`.

use ff::Field;
use group::Group;
use rand_core::{CryptoRng, RngCore};

use crate::suite::{mul_small, Suite};

/// A secret polynomial `f(x) = a_0 + a_1 x + … + a_{t-1} x^{t-1}`. Zeroized on drop.
pub struct Polynomial<S: Suite> {
    coeffs: Vec<S::Scalar>,
}

impl<S: Suite> Polynomial<S> {
    /// A random polynomial of degree `threshold - 1` (at least degree 0).
    pub fn random(threshold: u16, rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let coeffs = (0..threshold.max(1)).map(|_| S::Scalar::random(&mut *rng)).collect();
        Polynomial { coeffs }
    }

    /// A polynomial with the given constant term (the rest random); for tests and vectors.
    pub fn with_secret(secret: S::Scalar, threshold: u16, rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut p = Self::random(threshold, rng);
        p.coeffs[0] = secret;
        p
    }

    /// A polynomial with the given coefficients `a_0, a_1, …` (at least one; an empty list
    /// gives the zero polynomial of degree 0).
    pub(crate) fn from_coefficients(mut coeffs: Vec<S::Scalar>) -> Self {
        if coeffs.is_empty() {
            coeffs.push(S::Scalar::ZERO);
        }
        Polynomial { coeffs }
    }

    /// The constant term `a_0` (the dealt secret).
    pub fn secret(&self) -> &S::Scalar {
        // Never empty: `random` makes at least one coefficient.
        &self.coeffs[0]
    }

    /// `f(x)` at a node index.
    pub fn evaluate(&self, index: u16) -> S::Scalar {
        let x = S::Scalar::from(u64::from(index));
        self.coeffs.iter().rev().fold(S::Scalar::ZERO, |acc, c| acc * x + c)
    }

    /// Feldman commitments `[a_k·G]`.
    pub fn commitments(&self) -> Vec<S::Point> {
        self.coeffs.iter().map(|c| S::Point::generator() * c).collect()
    }
}

impl<S: Suite> Drop for Polynomial<S> {
    fn drop(&mut self) {
        for c in self.coeffs.iter_mut() {
            S::zeroize_scalar(c);
        }
    }
}

impl<S: Suite> std::fmt::Debug for Polynomial<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Polynomial(<redacted>)")
    }
}

/// `Σ_k C_k · x^k` for a small public `x` (Horner with double-and-add): the public value a
/// commitment vector gives at `x`, i.e. `f(x)·G`.
pub fn eval_commitments<S: Suite>(commitments: &[S::Point], x: u16) -> S::Point {
    commitments.iter().rev().fold(S::Point::identity(), |acc, c| mul_small(&acc, u64::from(x)) + c)
}

/// Whether `share·G == Σ C_k · index^k`.
pub fn verify_share<S: Suite>(commitments: &[S::Point], index: u16, share: &S::Scalar) -> bool {
    S::Point::generator() * share == eval_commitments::<S>(commitments, index)
}

/// Lagrange coefficients at `x = 0` for distinct non-zero indices: `λ_i = Π_{j≠i} x_j / (x_j - x_i)`.
///
/// Returns `None` if an index repeats or is zero.
pub fn lagrange_at_zero<F: Field + From<u64>>(indices: &[u16]) -> Option<Vec<F>> {
    lagrange_at(0, indices)
}

/// Lagrange coefficients at node index `x` for distinct non-zero indices:
/// `λ_i(x) = Π_{j≠i} (x_j - x) / (x_j - x_i)`, so `f(x) = Σ λ_i(x) f(x_i)` for any `f` of degree
/// below `indices.len()` (share recovery interpolates at the recovering node's index).
///
/// Returns `None` if an index repeats or is zero.
pub fn lagrange_at<F: Field + From<u64>>(x: u16, indices: &[u16]) -> Option<Vec<F>> {
    let at = F::from(u64::from(x));
    let xs: Vec<F> = indices.iter().map(|&i| F::from(u64::from(i))).collect();
    let mut seen = std::collections::BTreeSet::new();
    if indices.iter().any(|&i| i == 0 || !seen.insert(i)) {
        return None;
    }
    // One inversion per coefficient; t is small (≤ a few hundred), so batch inversion is not worth it.
    xs.iter()
        .enumerate()
        .map(|(i, xi)| {
            let (num, den) = xs
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .fold((F::ONE, F::ONE), |(num, den), (_, xj)| (num * (*xj - at), den * (*xj - xi)));
            Option::<F>::from(den.invert()).map(|inv| num * inv)
        })
        .collect()
}
