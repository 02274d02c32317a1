//! The team's audit log.

use super::*;

pub(crate) async fn audit(ctx: &Context, limit: u32) -> Result<(), Failure> {
    let events = collect(limit as usize, |page_size, page_token| async move {
        let page = ctx
            .registry()?
            .list_audit_events(pb::ListAuditEventsRequest {
                page_size,
                page_token,
                ..Default::default()
            })
            .await
            .map_err(ctx.failed())?
            .into_inner();
        Ok((page.events, page.next_page_token))
    })
    .await?;
    ctx.emit_list(
        &events,
        "No audit events.",
        &["TIME", "ACTOR", "ACTION", "TARGET"],
        |e| {
            vec![
                output::short_time(e.time.as_ref()),
                e.actor.clone(),
                e.action.clone(),
                e.target.clone(),
            ]
        },
        output::audit_event,
    );
    Ok(())
}
