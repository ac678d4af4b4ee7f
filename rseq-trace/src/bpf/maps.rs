//! The eBPF side's maps behind one typed accessor. The session opens one to write (processes to
//! trace, processes to forget, the sampling gate, the heartbeat); the views open their own, by
//! map id, to read the counters without sharing anything with the session.

use std::collections::BTreeMap;

use aya::{
    maps::{Array, HashMap, Map, MapData},
    Ebpf,
};
use rseq_common::{
    cause::{PositionKey, POSITIONS_MAP},
    counters::{CountKey, Counters, COUNTS_MAP},
    health::{Health, HEALTH_MAP},
    state::{DL_PENDING_MAP, HEARTBEAT_MAP, TRACED_MAP},
    window::{Slot, WINDOW_MAP},
};

use crate::error::AttachError;

/// The kernel's ids of the maps, to open another accessor anywhere in this process.
#[derive(Clone, Copy, Debug)]
pub struct MapIds {
    counts: u32,
    health: u32,
    traced: u32,
    positions: u32,
    window: u32,
    dl_pending: u32,
    heartbeat: u32,
}

impl MapIds {
    /// The ids of a loaded object's maps.
    pub fn of(ebpf: &Ebpf) -> Result<MapIds, AttachError> {
        let id = |name: &'static str| -> Result<u32, AttachError> {
            match ebpf.map(name) {
                Some(Map::HashMap(d) | Map::Array(d)) => Ok(d.info()?.id()),
                _ => Err(AttachError::Missing(name)),
            }
        };
        Ok(MapIds {
            counts: id(COUNTS_MAP)?,
            health: id(HEALTH_MAP)?,
            traced: id(TRACED_MAP)?,
            positions: id(POSITIONS_MAP)?,
            window: id(WINDOW_MAP)?,
            dl_pending: id(DL_PENDING_MAP)?,
            heartbeat: id(HEARTBEAT_MAP)?,
        })
    }

    /// (DL_PENDING, HEARTBEAT): what the hold watchdog opens.
    pub fn holds(&self) -> (u32, u32) {
        (self.dl_pending, self.heartbeat)
    }
}

/// Every value the counters hold at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapValues {
    /// Per (process, section, CPU).
    pub counts: BTreeMap<CountKey, Counters>,
    /// Events the eBPF side could not attribute, by [`Health`].
    pub health: [u64; Health::COUNT as usize],
    /// Processes the probes have seen (or the session registered).
    pub processes: Vec<u32>,
    /// Kernel restarts per (process, section, interrupted offset).
    pub positions: BTreeMap<PositionKey, u64>,
}

/// Typed access to every map.
pub struct Maps {
    counts: HashMap<MapData, CountKey, Counters>,
    health: Array<MapData, u64>,
    traced: HashMap<MapData, u32, u8>,
    positions: HashMap<MapData, PositionKey, u64>,
    window: Array<MapData, u64>,
    dl_pending: HashMap<MapData, u32, u8>,
    heartbeat: Array<MapData, u64>,
}

impl Maps {
    /// Opens the maps by id (new file descriptors: they outlive the session's).
    pub fn open(ids: MapIds) -> Result<Maps, AttachError> {
        let hash = |id| -> Result<Map, AttachError> { Ok(Map::HashMap(MapData::from_id(id)?)) };
        let array = |id| -> Result<Map, AttachError> { Ok(Map::Array(MapData::from_id(id)?)) };
        Ok(Maps {
            counts: HashMap::try_from(hash(ids.counts)?)?,
            health: Array::try_from(array(ids.health)?)?,
            traced: HashMap::try_from(hash(ids.traced)?)?,
            positions: HashMap::try_from(hash(ids.positions)?)?,
            window: Array::try_from(array(ids.window)?)?,
            dl_pending: HashMap::try_from(hash(ids.dl_pending)?)?,
            heartbeat: Array::try_from(array(ids.heartbeat)?)?,
        })
    }

    /// Every counter, the health counters, the traced processes and the restart positions.
    pub fn read(&self) -> Result<MapValues, AttachError> {
        let mut health = [0; Health::COUNT as usize];
        for h in Health::ALL {
            health[h as usize] = self.health.get(&(h as u32), 0)?;
        }
        Ok(MapValues {
            counts: self.counts()?,
            health,
            processes: self.traced_processes(),
            positions: self.positions.iter().filter_map(Result::ok).collect(),
        })
    }

    /// Every counter set.
    pub fn counts(&self) -> Result<BTreeMap<CountKey, Counters>, AttachError> {
        let mut map = BTreeMap::new();
        for entry in self.counts.iter() {
            let (k, v) = entry?;
            map.insert(k, v);
        }
        Ok(map)
    }

    /// The processes the probes have seen (or that were registered).
    pub fn traced_processes(&self) -> Vec<u32> {
        self.traced.keys().filter_map(Result::ok).collect()
    }

    /// Marks a process as traced, so the tracepoints count its kernel restarts from the start.
    pub fn trace_process(&mut self, tgid: u32) -> Result<(), AttachError> {
        Ok(self.traced.insert(tgid, 1, 0)?)
    }

    /// Drops a process that exited: its counter sets `keys` and its traced mark.
    pub fn forget_process(&mut self, tgid: u32, keys: &[CountKey]) {
        for k in keys.iter().filter(|k| k.tgid == tgid) {
            let _ = self.counts.remove(k);
        }
        let _ = self.traced.remove(&tgid);
    }

    /// Entry-probe hits let through by open windows so far (all sections).
    pub fn window_hits(&self) -> Result<u64, AttachError> {
        Ok(self.window.get(&(Slot::Hits as u32), 0)?)
    }

    /// Opens (1) or closes (0) sampled mode's gate.
    pub fn set_gate(&mut self, open: bool) -> Result<(), AttachError> {
        Ok(self.window.set(Slot::Open as u32, u64::from(open), 0)?)
    }

    /// Processes stopped by the library hook since the last call, cleared from the map.
    pub fn take_dl_pending(&mut self) -> Vec<u32> {
        let pids: Vec<u32> = self.dl_pending.keys().filter_map(Result::ok).collect();
        for p in &pids {
            let _ = self.dl_pending.remove(p);
        }
        pids
    }

    /// Tells the eBPF side (and the hold watchdog) that the loop that releases holds is alive.
    pub fn heartbeat(&mut self) -> Result<(), AttachError> {
        let now = crate::session::hold_watchdog::monotonic_ns();
        Ok(self.heartbeat.set(0, now, 0)?)
    }

    /// Makes the heartbeat stale for good (the boot, long past), so that the library hook holds
    /// no process from now on: the last sweep of `DL_PENDING` after this one misses none.
    pub fn stop_holding(&mut self) {
        let _ = self.heartbeat.set(0, 0, 0);
    }
}
