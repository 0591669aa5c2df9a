//! Guest memory requests: SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG.

use std::os::fd::BorrowedFd;

use super::{check_size, payload_u64, Incoming, Outcome};
use crate::abi::*;
use crate::device::Dev;
use crate::fd::close_fd;
use crate::memory::MemoryTableMut;
use crate::queue::map_ring;

const REGION_SIZE: usize = std::mem::size_of::<VhostUserMemoryRegion>();
const MEMREG_SIZE: usize = std::mem::size_of::<VhostUserMemRegMsg>();

/// Forgets every ring pointer: the mappings they point into are about to change.
fn unmap_all_rings(dev: Dev) {
    for i in 0..usize::from(dev.max_queues()) {
        if let Some(vq) = dev.vq(i) {
            // SAFETY: in-range queue; the caller holds the memory write lock.
            unsafe {
                (*vq).vring.desc = std::ptr::null_mut();
                (*vq).vring.avail = std::ptr::null_mut();
                (*vq).vring.used = std::ptr::null_mut();
            }
        }
    }
}

/// Maps a region with the fd we own, closing it afterwards (the mapping keeps the memory).
fn add_region(
    table: &mut MemoryTableMut,
    desc: &VhostUserMemoryRegion,
    fd: libc::c_int,
) -> Result<u64, String> {
    // SAFETY: fd was received with the message and is open until closed below.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let result =
        table.add(desc, borrowed).map(|r| r.mmap_addr + r.mmap_offset).map_err(|e| e.to_string());
    close_fd(fd);
    result
}

pub fn set_mem_table(dev: Dev, vmsg: &mut VhostUserMsg, fds: &mut Incoming) -> Outcome {
    if !check_size(dev, vmsg, vmsg.size >= 8) {
        return Outcome::Failed;
    }
    // SAFETY: plain-data union read.
    let memory = unsafe { vmsg.payload.memory };
    let n = memory.nregions as usize;
    if n > VHOST_MEMORY_BASELINE_NREGIONS || (vmsg.size as usize) < 8 + n * REGION_SIZE {
        fds.close_all();
        dev.panic(&format!("Invalid SET_MEM_TABLE message: {n} regions in {} bytes", {
            vmsg.size
        }));
        return Outcome::Failed;
    }
    if fds.count() != n {
        let got = fds.count();
        fds.close_all();
        dev.panic(&format!("SET_MEM_TABLE with {n} regions came with {got} fds"));
        return Outcome::Failed;
    }
    let postcopy = dev.postcopy_listening();
    let mut errors = Vec::new();
    let mut reply_regions = memory.regions;
    {
        let mut mem = dev.mem_mut();
        let mut table = mem.table_mut();
        unmap_all_rings(dev);
        table.clear();
        for (i, region) in memory.regions.iter().take(n).enumerate() {
            let fd = fds.take(i).unwrap_or(-1);
            match add_region(&mut table, region, fd) {
                // In postcopy the frontend learns where we mapped each region.
                Ok(host) => reply_regions[i].userspace_addr = host,
                Err(e) => errors.push(e),
            }
        }
    }
    for e in &errors {
        dev.panic(e);
    }
    if postcopy {
        vmsg.payload.memory.regions = reply_regions;
        return crate::postcopy::finish_set_mem_table(dev, vmsg);
    }
    remap_rings(dev);
    if errors.is_empty() {
        Outcome::Done
    } else {
        Outcome::Failed
    }
}

/// Maps again the rings that had addresses before a memory table change.
fn remap_rings(dev: Dev) {
    let mut failed = Vec::new();
    {
        let mem = dev.mem_mut();
        let table = mem.table();
        for i in 0..usize::from(dev.max_queues()) {
            let Some(vq) = dev.vq(i) else { continue };
            // SAFETY: in-range queue, under the memory lock.
            let q = unsafe { &mut *vq };
            if q.vra.desc_user_addr != 0 && map_ring(dev, &table, q).is_err() {
                failed.push(i);
            }
        }
    }
    for i in failed {
        dev.panic(&format!("remapping queue {i} during setmemtable"));
    }
}

pub fn add_mem_reg(dev: Dev, vmsg: &mut VhostUserMsg, fds: &mut Incoming) -> Outcome {
    // In postcopy, a zero u64 says every region is in place: start faulting.
    if dev.postcopy_listening() && vmsg.size == 8 && payload_u64(vmsg) == 0 {
        fds.close_all();
        let _ = crate::postcopy::generate_faults(dev);
        return Outcome::Done;
    }
    if fds.count() != 1 {
        let n = fds.count();
        fds.close_all();
        dev.panic(&format!(
            "VHOST_USER_ADD_MEM_REG received {n} fds - only 1 fd should be sent for this message type"
        ));
        return Outcome::Failed;
    }
    if (vmsg.size as usize) < MEMREG_SIZE {
        fds.close_all();
        dev.panic(&format!(
            "VHOST_USER_ADD_MEM_REG requires a message size of at least {MEMREG_SIZE} bytes and only {} bytes were received",
            { vmsg.size }
        ));
        return Outcome::Failed;
    }
    // SAFETY: plain-data union read.
    let region = unsafe { vmsg.payload.memreg.region };
    let postcopy = dev.postcopy_listening();
    let result = {
        let mut mem = dev.mem_mut();
        let mut table = mem.table_mut();
        if table.len() >= VHOST_USER_MAX_RAM_SLOTS {
            Err("failing attempt to hot add memory via VHOST_USER_ADD_MEM_REG message because the backend has no free ram slots available".to_string())
        } else {
            add_region(&mut table, &region, fds.take(0).unwrap_or(-1))
        }
    };
    fds.close_all();
    match result {
        Err(e) => {
            dev.panic(&e);
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
    fds.close_all();
    if n > 1 {
        dev.panic(&format!("VHOST_USER_REM_MEM_REG received {n} fds - at most 1 fd should be sent for this message type"));
        return Outcome::Failed;
    }
    if (vmsg.size as usize) < MEMREG_SIZE {
        dev.panic(&format!(
            "VHOST_USER_REM_MEM_REG requires a message size of at least {MEMREG_SIZE} bytes and only {} bytes were received",
            { vmsg.size }
        ));
        return Outcome::Failed;
    }
    // SAFETY: plain-data union read.
    let region = unsafe { vmsg.payload.memreg.region };
    let removed = {
        let mut mem = dev.mem_mut();
        let found = mem.table_mut().remove_exact(&region);
        if let Some((lo, hi)) = found {
            // Rings inside the region lose their mapping; they are remapped on use if the
            // region comes back.
            for i in 0..usize::from(dev.max_queues()) {
                let Some(vq) = dev.vq(i) else { continue };
                // SAFETY: in-range queue, under the write lock.
                let q = unsafe { &mut *vq };
                let inside = |p: usize| p >= lo && p < hi;
                if inside(q.vring.desc as usize)
                    || inside(q.vring.avail as usize)
                    || inside(q.vring.used as usize)
                {
                    q.vring.desc = std::ptr::null_mut();
                    q.vring.avail = std::ptr::null_mut();
                    q.vring.used = std::ptr::null_mut();
                }
            }
        }
        found
    };
    match removed {
        Some(_) => Outcome::Done,
        None => {
            dev.panic("Specified region not found\n");
            Outcome::Failed
        }
    }
}
