//! Guest memory table requests: SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG (the table itself is
//! `crate::memory`).

use std::os::fd::{AsFd, OwnedFd};

use super::{body, invalid_size, refuse, Incoming, Outcome};
use crate::abi::*;
use crate::device::Dev;
use crate::memory::{AddError, MemoryTableMut};
use crate::message::{self, Size};
use crate::queue::map_ring;

const REGION_SIZE: usize = std::mem::size_of::<VhostUserMemoryRegion>();
const MEMREG_SIZE: usize = std::mem::size_of::<VhostUserMemRegMsg>();

/// Maps a region with the fd we own, closing it afterwards (the mapping keeps the memory).
/// `None`: a caller's reader counted an fd it did not give.
fn add_region(
    table: &mut MemoryTableMut,
    desc: &VhostUserMemoryRegion,
    fd: Option<OwnedFd>,
) -> Result<u64, AddError> {
    let fd = fd.ok_or_else(|| AddError::Mmap(std::io::Error::from_raw_os_error(libc::EBADF)))?;
    table.add(desc, fd.as_fd()).map(|r| r.mmap_addr + r.mmap_offset)
}

pub fn set_mem_table(dev: Dev, vmsg: &mut VhostUserMsg, fds: &mut Incoming) -> Outcome {
    let Some(memory) = body::<VhostUserMemory>(dev, vmsg, Size::AtLeast(8), invalid_size) else {
        return Outcome::Failed;
    };
    let n = memory.nregions as usize;
    if n > VHOST_MEMORY_BASELINE_NREGIONS || (vmsg.size as usize) < 8 + n * REGION_SIZE {
        let size = vmsg.size;
        return refuse(
            dev,
            fds,
            &format!("Invalid SET_MEM_TABLE message: {n} regions in {size} bytes"),
        );
    }
    if fds.count() != n {
        let got = fds.count();
        return refuse(dev, fds, &format!("SET_MEM_TABLE with {n} regions came with {got} fds"));
    }
    // The regions being replaced may hold buffers of elements the backend still has: their
    // mappings must be able to wait for them (see crate::retired).
    let old = dev.nregions() as usize;
    if !dev.mem_mut().can_retire(old) {
        return refuse(dev, fds, &too_many_retired("SET_MEM_TABLE"));
    }
    let postcopy = dev.postcopy_listening();
    let mut errors = Vec::new();
    let mut reply_regions = memory.regions;
    {
        let mut mem = dev.mem_mut();
        for vq in dev.queues() {
            mem.forget_ring(vq);
        }
        let old = mem.table_mut().clear();
        mem.retire(old);
        let mut table = mem.table_mut();
        for (i, region) in memory.regions.iter().take(n).enumerate() {
            match add_region(&mut table, region, fds.take(i)) {
                // In postcopy the frontend learns where we mapped each region.
                Ok(host) => reply_regions[i].userspace_addr = host,
                Err(e) => errors.push(e),
            }
        }
        mem.prune_iotlb();
    }
    for e in &errors {
        dev.panic(&e.to_string());
    }
    if postcopy {
        vmsg.payload.memory.regions = reply_regions;
        return super::postcopy::finish_set_mem_table(dev, vmsg);
    }
    remap_rings(dev);
    if errors.is_empty() {
        Outcome::Done
    } else {
        Outcome::Failed
    }
}

/// The refusal of a request that would retire more guest mappings than `crate::retired` keeps.
fn too_many_retired(request: &str) -> String {
    format!(
        "{request} refused: the backend still holds popped elements and {} removed memory \
         mappings already wait for them",
        crate::retired::MAX_RETIRED_MAPPINGS
    )
}

/// Maps again the rings that had addresses before a memory table change.
fn remap_rings(dev: Dev) {
    let mut failed = Vec::new();
    {
        let mut mem = dev.mem_mut();
        for vq in dev.queues() {
            // With the IOMMU a ring the IOTLB cannot translate now is mapped on use.
            let failed_now = mem.with_queue(vq, |q, table| {
                q.vra.desc_user_addr != 0
                    && map_ring(dev, table, q).is_err()
                    && table.iotlb().is_none()
            });
            if failed_now {
                failed.push(vq.index());
            }
        }
    }
    for i in failed {
        dev.panic(&format!("remapping queue {i} during setmemtable"));
    }
}

pub fn add_mem_reg(dev: Dev, vmsg: &mut VhostUserMsg, fds: &mut Incoming) -> Outcome {
    // In postcopy, a zero u64 says every region is in place: start faulting.
    if dev.postcopy_listening() && vmsg.size == 8 && message::body::<u64>(vmsg) == 0 {
        fds.close_all();
        let _ = crate::userfaultfd::generate_faults(dev);
        return Outcome::Done;
    }
    let fd = match fds.take_one(dev, |n| {
        format!("VHOST_USER_ADD_MEM_REG received {n} fds - only 1 fd should be sent for this message type")
    }) {
        Ok(fd) => fd,
        Err(refused) => return refused,
    };
    let Some(memreg) = body::<VhostUserMemRegMsg>(dev, vmsg, Size::AtLeast(MEMREG_SIZE), |m| {
        format!(
            "VHOST_USER_ADD_MEM_REG requires a message size of at least {MEMREG_SIZE} bytes and only {} bytes were received",
            { m.size }
        )
    }) else {
        return Outcome::Failed;
    };
    let region = memreg.region;
    let postcopy = dev.postcopy_listening();
    let result = {
        let mut mem = dev.mem_mut();
        let mut table = mem.table_mut();
        if table.len() >= VHOST_USER_MAX_RAM_SLOTS {
            Err(None)
        } else {
            add_region(&mut table, &region, Some(fd)).map_err(Some)
        }
    };
    match result {
        Err(None) => {
            dev.panic("failing attempt to hot add memory via VHOST_USER_ADD_MEM_REG message because the backend has no free ram slots available");
            Outcome::Failed
        }
        Err(Some(e)) => {
            dev.panic(&e.to_string());
            Outcome::Failed
        }
        Ok(host) if postcopy => {
            // Tell the frontend where the region is mapped, so it can translate faults.
            vmsg.payload.memreg.region.userspace_addr = host;
            vmsg.fd_num = 0;
            Outcome::Reply
        }
        Ok(_) => Outcome::Done,
    }
}

pub fn rem_mem_reg(dev: Dev, vmsg: &mut VhostUserMsg, fds: &mut Incoming) -> Outcome {
    let n = fds.count();
    if n > 1 {
        return refuse(dev, fds, &format!("VHOST_USER_REM_MEM_REG received {n} fds - at most 1 fd should be sent for this message type"));
    }
    fds.close_all();
    let Some(memreg) = body::<VhostUserMemRegMsg>(dev, vmsg, Size::AtLeast(MEMREG_SIZE), |m| {
        format!(
            "VHOST_USER_REM_MEM_REG requires a message size of at least {MEMREG_SIZE} bytes and only {} bytes were received",
            { m.size }
        )
    }) else {
        return Outcome::Failed;
    };
    let region = memreg.region;
    if !dev.mem_mut().can_retire(1) {
        return refuse(dev, fds, &too_many_retired("REM_MEM_REG"));
    }
    let removed = {
        let mut mem = dev.mem_mut();
        let found = mem.table_mut().remove_exact(&region);
        if let Some(mapping) = found {
            let (lo, hi) = (mapping.as_ptr() as usize, mapping.as_ptr() as usize + mapping.len());
            // Rings inside the region lose their mapping; they are remapped on use if the
            // region comes back.
            let inside = |p: usize| p >= lo && p < hi;
            for vq in dev.queues() {
                let hit = mem.with_queue(vq, |q, _| {
                    inside(q.vring.desc as usize)
                        || inside(q.vring.avail as usize)
                        || inside(q.vring.used as usize)
                });
                if hit {
                    mem.forget_ring(vq);
                }
            }
            mem.retire([mapping]);
            mem.prune_iotlb();
            Some(())
        } else {
            None
        }
    };
    match removed {
        Some(_) => Outcome::Done,
        None => {
            dev.panic("Specified region not found\n");
            Outcome::Failed
        }
    }
}
