"""H5MD backend: frames in H5MD 1.1 files that znh5md, MDAnalysis and pyh5md read, and H5MD 1.x
files written by other programs, read lazily with numpy over frames.

>>> from asebytes_nodes import ASEIO
>>> db = ASEIO("frames.h5", author_name="Jane Doe", compression="lzf")  # doctest: +SKIP
>>> train = ASEIO("frames.h5", group="train")  # another particle group  # doctest: +SKIP

On-disk layout (layout versions 2 and 3)
---------------------------------
One store is one particle group ``<g>`` (``group=``, default ``atoms``); ``T`` frames, ``W`` the
largest atom count so far. Several stores (groups) share one file, each with its own elements,
observables and column table, so each has its own length, keys, schema and format record; the
``h5md`` metadata, the writer lock and the undo journal are the file's. Opened without
``group=``, a file we wrote gives its ``atoms`` store (empty until written, whatever other groups
the file holds); :meth:`~._backend.H5MDBackend.list_groups` names the other groups::

    h5md/                          version [1, 1]; author (name, email); creator (asebytes-nodes, version)
    particles/<g>/
        box/                       dimension 3; boundary ("periodic"/"none", from the first frame's pbc)
            edges/value            float64 (T, 3, 3) "Angstrom"         <- cell
            pbc/value              bool (T, 3)                          <- pbc (znh5md's per-frame extension)
        position/value             float64 (T, W, 3) "Angstrom"         <- arrays.positions
        species/value              int64 (T, W); float64 padded with NaN once atom counts differ
                                                                        <- arrays.numbers
        mass/value, charge/value   (T, W) "amu", "e"                    <- arrays.masses, initial_charges
        forces/value               (T, W, 3) "eV Angstrom-1"            <- calc.forces
        momenta/value              (T, W, 3) ASE units                  <- arrays.momenta
        velocity/value             (T, W, 3) "Angstrom ps-1": momenta / masses, for other readers
                                   (never read back; znh5md's origin attribute says "info")
        <name>/value               (T, W, ...)                          <- other arrays.* and per-atom calc.*
    observables/<g>/
        energy/value "eV", stress/value "eV Angstrom-3"                 <- calc.energy, calc.stress
        <name>/value               (T, ...) numbers, or UTF-8 strings   <- other calc.* and info.*
    parameters/asebytes_nodes/<g>/ attribute "asebytes_nodes": the JSON column table
        step, time                 int64, float64 (T,) "fs": the clock (below), hard-linked as
                                   step/time into every element above
        n_atoms                    int64 (T,) true atom count of each frame
        present/c<k>               bool (T,) for a column that some frames lack
        encoded/c<k>               vlen uint8 (T,): values without an H5MD element (dicts, lists,
                                   None, string arrays, constraints ...), encoded by asebytes_nodes.codec

The table is ``{"format": "asebytes_nodes.h5md", "version": 2 or 3, "length": T, "width": W,
"padded": atom counts ever differed, "timestep": fs, "next": column id counter, "velocity": bool,
["clock": "info",] "columns": {key: {"id", "kind", "path", "dtype", "shape", "type", "count",
"flags"}}}``, kinds ``atom`` (per-atom numbers), ``frame`` (per-frame arrays), ``scalar`` (one
exact scalar type, see :func:`~asebytes_nodes.backends._columns.scalar_type_code`), ``string``
and ``object`` (encoded). Per-atom
values are padded to ``W`` with NaN (floats), 0 or False and a frame lacking a key holds the same
fill value; ``n_atoms`` and ``present`` give every row back exactly. znh5md reads the NaN padding.

A key gets the standard element above, else the part after its namespace (``info.smiles`` ->
``observables/<g>/smiles``); a name that another key holds, that a standard element reserves or
that contains ``/`` becomes the whole key with ``/`` written ``%2F`` (``arrays.forces`` next to
``calc.forces`` -> ``particles/<g>/arrays.forces``). Element groups carry znh5md's
``ASE_ENTRY_ORIGIN`` attribute (arrays, calc, info) so znh5md files them in the right namespace.

The clock (:mod:`._clock`): the frames' own ``info.step`` and ``info.time`` (in fs, as this
reader gives another H5MD file's times) while every frame of the store carries both, steps
integers (or whole-number floats, as znh5md writes them) that increase and times finite numbers
(``"clock": "info"``, version 3), so MDAnalysis reads a converted MD run's or H5MD file's steps
and times; otherwise frame ``i`` is step ``i`` at time ``i * timestep`` (version 2). The first
frames decide; a later write that breaks the rule (a frame without ``info.step``, a step not
after the one before) turns the whole store's clock to frame indices, with a warning, and it
stays so. ``info.step`` and ``info.time`` are columns of
their own as well (``observables/<g>/step``, ``time``): they read back exactly as written.

A 0-frame store (``extend([])``) also holds empty ``species/value`` (0, 1) and ``box/edges/value``
elements, which znh5md needs to read it as 0 frames, and is version 3 (so asebytes-nodes before
it refuses it); the first frames replace them.

Units: ASE's (Angstrom, eV, amu, e), written as unit strings MDAnalysis knows where one exists.
Forces stay in eV/Angstrom under the name ``forces``, not the standard ``force``: MDAnalysis reads
``force`` only in units from its own table (none is eV-based) and raises on any other unit string
even with ``convert_units=False``, while znh5md ignores units and assumes eV/Angstrom. This way
znh5md reads our forces and MDAnalysis opens our files with its defaults (positions, velocities,
box; ``MDAnalysis.Universe(path)`` without a topology takes its atoms from the particle group
``trajectory`` and its frames from the alphabetically first group, of a file named ``*.h5md``:
write with ``group="trajectory"`` into a file of that one group for it). ``velocity`` is
tagged ``info`` for znh5md, which would otherwise rebuild momenta from it without its unit;
znh5md takes the exact ``momenta`` instead.

Writes: append (``extend``) and replace in place (``set_rows``, ``update_rows``, ``drop_keys``); no
insert or delete, which would move every dataset. Every value is checked and encoded before the
file is opened for writing; the table (with ``length``) is written last. A value that does not fit
its column's type (an EMT energy, ``np.float64``, after energies read from ``.traj``, Python
floats) rewrites the column within the write, stored rows and new, as one ``extend`` of them all
would have stored it (encoded when the types mix); its old element is removed, so other programs
never read part of a column. The particle group's elements (positions, species, masses, charges,
momenta, forces, box) stay typed for other programs: frames giving one of them two dtypes (float32
forces among float64) are refused, whether in one write or several. Every write is all or
nothing, also under kill -9 and a full disk: it goes through the undo journal of
:mod:`.._hdf5_journal` (``<file>-journal`` while it runs; an interrupted write is rolled back by
the next open), writers (of any group) are serialised across processes by ``<file>.lock``
(waiting, then StoreLockedError), and readers wait out a write. Handles follow
:mod:`.._hdf5_files`: one read-only h5py handle per file per process, shared by every backend on
the file (reading never changes the file, but the first open after a killed write rolls it
back); a write closes it and writes through h5py's ``fileobj`` driver; every handle reopens when
the file's size or mtime changes. A forked child opens its own handle and never closes its
parent's.

Chunks and random reads
-----------------------
HDF5 decodes whole chunks, so a random row costs its chunk. Per-frame datasets are chunked at
about 32 KiB along frames (an energy column reads in a few chunks); per-atom datasets written
since this change at about 4 KiB per chunk (at least one frame; the atom axis whole), so a
random frame of a wide store decodes one small chunk per element instead of ~32 KiB (files
written before keep their 32 KiB chunks and read as before). Measured with h5py on 20,000
frames of up to 128 atoms (positions, gzip, fletcher32, loaded 2-core machine, median of 3):
10 frames per chunk (32 KiB) 337 us per random row, 10.7 ms per sorted batch of 32 rows,
0.69 s reading everything in slabs; 2 frames (8 KiB) 81 us, 8.4 ms, 1.0 s; 1 frame (3 KiB)
59 us, 5.3 ms, 0.88 s; file size +7 %. Chunking the atom axis too (4 x 32 atoms) was slower
everywhere (31 ms per batch). End to end on 100,000 frames of 8-128 atoms (same code, fresh
processes, median of 2, load 10-13): 1,000 random ``db[i]`` 528/s on 4 KiB chunks against
179/s on 32 KiB ones; shuffled ``to_batch`` of 32 1,156/s against 1,954/s (not settled on
this machine: rerun before relying on it).

Small chunks cost writes: deflate pays about 20 us per chunk whatever its size (one Huffman
block each), and a 1,000-frame store of up to 200 atoms has 1,000 chunks per per-atom element.
So :mod:`._chunks` writes whole chunks itself: cut from the write's data with numpy, encoded,
given HDF5's fletcher32 (vectorised) and stored with ``H5Dwrite_chunk``; rows that share a chunk
with stored rows, lzf and other pipelines go through HDF5. Every chunk is a zlib stream under the
dataset's own filters (deflate, then fletcher32; filter mask 0), so every HDF5 reader decodes it
and a flipped bit fails the checksum as before. Deflating random float mantissas (positions,
forces) saves about 4 % of them for about 40 us per 4 KiB chunk; what a padded store saves is its
NaN padding. So each write probes its first chunks per dataset: where zlib gains less than 10 %
over it, every chunk of the write is a zlib stream of stored blocks (the data, copied) and
deflated blocks (each run of fill values, cached by length); elsewhere (integers, species,
repeated values, writes of up to 4 chunks) zlib deflates every chunk, in a thread pool (one
thread per CPU, at most 4; writes under 256 KiB inline), the bytes HDF5's own filter writes.
Files written before (all zlib) read as before; the layout is unchanged. Measured on
periodic-1000 (loaded 2-core machine, best of 5 per fresh process, rounds alternating): CPU per
write 232-251 ms with every chunk deflated in the pool, 105-118 ms now (88 ms of it on the
writing thread), e04f21f (32 KiB chunks, HDF5 filtering) 154-160 ms; file 5.21 -> 5.37 MB
(e04f21f 4.96 MB). Ethanol-20000: CPU 626-639 ms, now 450-463, e04f21f 582-584 ms; file
10.41 -> 10.77 MB (+3.5 %).

Reads go through :mod:`._gather`: a dataset whose decoded size fits ``cache_bytes`` (64 MiB
per file and process by default, shared by the stores on the file) is mirrored chunk by chunk
as requests touch it, so repeated random rows and training batches are numpy indexing without
h5py calls; larger datasets are read per request (each chunk once, per-atom ones only up to the
widest frame asked for). ``read_batch`` (``to_batch``) gathers a batch from each dataset read
once, with numpy over the atom offsets: no per-frame Python. Chunks of our own numeric datasets
are read as stored and decoded by :mod:`._direct` (fletcher32 and inflate as HDF5 applies them;
an HDF5 selection of scattered small chunks costs 2-4x more), found through the dataset's
chunk B-tree read by :mod:`.._hdf5_btree` (each leaf once per handle) and read with ``pread``:
h5py's ``read_direct_chunk`` looks each chunk up twice in HDF5's index (10-14 us a chunk here).
Shuffled batches of 32 over 20,000 periodic frames, fresh process, 300 batches: 1.00-1.08 s
with ``read_direct_chunk``, 0.73-0.81 s now (our LMDB: 0.32-0.44 s; loaded 2-core machine).
Indexes it does not read (HDF5 1.10+ layouts, other address sizes, damaged nodes) go through
HDF5 as before: HDF5's metadata cache is 32 MiB per read handle and a dataset's chunk index is
walked once when a reader looks up many of its chunks, so random rows of a 100,000-frame store
do not re-read B-tree nodes. ``to_numpy`` of a
scalar column is the stored array (``read_column_array``), no Python value per row.

Reading files from other programs (H5MD 1.0 and 1.1; pre-1.0 and 2.x are refused)
-------------------------------------------------------------------------------
* Frames are the samples of ``position`` (else of the first time-dependent per-atom element);
  other elements are matched to them by ``step`` (explicit arrays, or scalar step with
  ``offset``); a frame whose step an element did not sample lacks that key (velocity and force
  sampled at other steps than position). An element without ``step``, or whose steps do not
  increase (a broken writer), is matched by index when it has one sample per frame; otherwise an
  observable is taken as time-independent (same value on every frame) and a per-atom element is
  skipped. Time-independent datasets (species, mass, box edges...) give every frame the same value.
* Per-atom elements: position -> arrays.positions, species -> arrays.numbers (int64, from integer
  or float species), mass -> arrays.masses, charge -> arrays.initial_charges, force/forces ->
  calc.forces, momenta/momentum -> arrays.momenta, velocity -> arrays.momenta as velocity x mass
  (masses from ``mass`` or ASE's table; only without a momenta element); any other element ->
  ``<origin>.<name>`` with znh5md's origin attribute, else ``arrays.<name>``. Padding: particles
  whose ``id`` equals its fill value are left out, else trailing NaN positions (or species) are.
* ``box``: edges (cuboid vector or triclinic matrix, fixed or time-dependent) -> cell, zeros when
  absent; ``boundary`` (fixed- or variable-length strings) or znh5md's ``box/pbc`` -> pbc.
* Observables of the group (``observables/<g>/*``), then global ones (``observables/*``):
  energy, and potential_energy unless the file declares the thermodynamics module (which makes it
  per particle) -> calc.energy, stress -> calc.stress, others -> ``info.<name>``; a global one
  whose key a group observable already gave is skipped. ``step`` and ``time`` of the frames ->
  info.step, info.time (in fs when the file gives a time unit). Connectivity (ASE frames have no
  bonds) and parameters are not read.
* Units: values with a unit string for length, velocity, force, energy, pressure, mass, charge or
  time are converted to ASE units; data without a unit string (reduced units) is taken as it is;
  an unknown unit string raises :class:`~asebytes_nodes.errors.StoreCorruptedError`. Other keys
  (``info.*``, custom arrays) are read as stored; a unit string there other than ASE's or none is
  named in a warning (dataset, unit, key; once per file and dataset in a process).
* Files whose ``h5md/creator`` is ``znh5md`` are read as znh5md reads them: values are in ASE
  units whatever the label (it labels ASE velocities ``Angstrom/fs``), and an all-NaN value of
  a result or custom element means the frame has none (a frame written without a calculator).
* A per-atom element narrower than the group (znh5md writes forces only as wide as the largest
  frame that has them) is read for the frames that fit in it; larger frames lack the key.
  Elements that cannot be read are listed in ``skipped`` and named in a warning at open.
* ``skipped`` lists every element that was not read, with the reason. Without ``group=``, a file
  opens its ``atoms`` group, or its only one; one with several and no ``atoms`` needs ``group=``
  (the error lists them; see :meth:`~._backend.H5MDBackend.list_groups`).
  ``check()`` names where a file departs from H5MD 1.1 (metadata, box attributes, elements
  without or with decreasing steps) and, for stores written here, from the column table.

Files other programs wrote are read-only: writes raise
:class:`~asebytes_nodes.errors.UnsupportedOperationError` (copy the frames into a new file).
H5MD stored in a Zarr v2 directory ("zarrmd", as zarrtraj writes it) is read the same way through
the h5py-like view in :mod:`._zarrmd` (needs zarr), and is always read-only.

Version history
---------------
1. First layout (asebytes-nodes 0.1).
2. Fixed-size datasets carry HDF5's ``fletcher32`` checksum per chunk (a damaged chunk raises
   StoreCorruptedError naming dataset and rows; ``check()`` lists them); the table has its
   CRC-32 in the attribute ``asebytes_nodes_crc32``; new files use HDF5 1.8's object formats
   (checksummed metadata). Same groups and datasets otherwise: version 1 stores are read, and
   written as version 1 (datasets they gain get checksums). Strings and encoded values
   (variable-length, in HDF5's global heap) have no checksum.
3. The clock may come from the frames' ``info.step`` and ``info.time`` (table ``"clock": "info"``),
   and 0-frame stores hold empty ``species`` and ``box/edges`` elements for znh5md; only such
   stores are version 3 (asebytes-nodes before it refuses them rather than append frame-index
   steps to them or fail on the placeholders). They turn version 2 when their clock turns to
   frame indices, or when the first frames replace the placeholders of a store whose clock is
   the frame index. Stores with the index clock, and version 1 stores, are written as before.

Modules
-------
``_backend`` (the backend class), ``_plan`` (what to read, stored values to rows), ``_gather``
(chunk-filled mirrors and training batches), ``_direct`` (our chunks read and decoded), ``_foreign``
(other programs' files), ``_units``, ``_clock`` (step and time), ``_check`` (``check()`` and the
H5MD version), ``_table`` (the column table, values checked and encoded), ``_writer`` (the write
session), ``_chunks`` (whole chunks deflated in threads), ``_zarrmd`` (the read-only Zarr v2 view).
"""

from ...errors import MissingExtraError

try:
    import h5py  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError('The H5MD backend needs h5py. Run: pip install "asebytes-nodes[h5md]"') from exc

from ._backend import DEFAULT_GROUP, H5MDBackend
from ._check import sniff
from ._units import unit_factor

__all__ = ["DEFAULT_GROUP", "H5MDBackend", "sniff", "unit_factor"]
